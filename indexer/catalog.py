"""Catalog sources: a folder walked recursively, or a CSV / JSONL manifest.

Each source yields :class:`CatalogItem` values (a stable id, where the image is, metadata)
and collects per-row problems as :class:`RowError` instead of raising, so one bad row never
stops a run. Paths are confined to allowed roots: a manifest cannot make the indexer read
(and the UI serve) a file outside the catalog.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import CatalogError
from search.images import is_image_path

log = logging.getLogger(__name__)

ID_COLUMNS = ("id", "sku", "product_id")
IMAGE_COLUMNS = ("image", "image_path", "path", "image_url", "url")
MAX_ID_LENGTH = 1000


@dataclass(frozen=True)
class CatalogItem:
    """One product image: stable id, local path or URL, and its metadata."""

    id: str
    image: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_url(self) -> bool:
        return self.image.startswith(("http://", "https://"))


@dataclass(frozen=True)
class RowError:
    """A catalog entry that was skipped, with where it came from and why."""

    where: str
    reason: str
    item_id: str = ""  # the row's id when it could be read: that item is kept, not deleted


@dataclass
class Catalog:
    """The items of a source plus the rows that could not be used."""

    root: Path
    items: list[CatalogItem]
    errors: list[RowError]
    complete: bool = True  # False when a manifest could not be read to its end

    @property
    def protected_ids(self) -> set[str]:
        """Ids of rows that failed: their stored items stay (a bad row never deletes)."""
        return {e.item_id for e in self.errors if e.item_id}


def load_catalog(
    source: str | Path,
    *,
    id_column: str | None = None,
    image_column: str | None = None,
    numeric_columns: Sequence[str] = ("price",),
    allowed_roots: Sequence[str | Path] = (),
) -> Catalog:
    """Read a folder or a ``.csv`` / ``.jsonl`` manifest into a :class:`Catalog`."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CatalogError(f"catalog source {source} does not exist (unmounted?)")
    if path.is_dir():
        items, errors = _walk_folder(path.resolve())
        return Catalog(path.resolve(), items, errors)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise CatalogError(f"{source}: a catalog is a folder, a .csv or a .jsonl manifest")
    root = path.resolve().parent
    roots = [root, *(Path(r).expanduser().resolve() for r in allowed_roots)]
    rows = _read_csv(path) if suffix == ".csv" else _read_jsonl(path)
    reader = _ManifestReader(root, roots, id_column, image_column, tuple(numeric_columns))
    items, errors = reader.read(rows, path.name)
    if not reader.complete:
        log.warning("%s could not be read to its end: this run deletes nothing", path)
    return Catalog(root, items, errors, complete=reader.complete)


def _walk_folder(root: Path) -> tuple[list[CatalogItem], list[RowError]]:
    items: list[CatalogItem] = []
    errors: list[RowError] = []

    def on_error(exc: OSError) -> None:
        errors.append(RowError(str(exc.filename or root), f"cannot list folder: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.startswith(".") or not is_image_path(name):
                continue
            rel = full.relative_to(root).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(RowError(repr(rel), "file name is not valid UTF-8"))
                continue
            problem = _entry_problem(full, root)
            if problem:
                errors.append(RowError(rel, problem))
                continue
            items.append(CatalogItem(rel, str(full), {}))
    return items, errors


def _entry_problem(full: Path, root: Path) -> str:
    """Why a listed file cannot be a catalog image ('' when it can).

    Symlink loops and dangling links, and anything but a regular file (a FIFO would block
    the reader forever, a device never ends) are refused here, with a reason.
    """
    try:
        st = full.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if full.is_symlink():
            return "broken symlink (target does not exist)"
        return f"cannot read file: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (FIFO, socket or device)"
    if full.is_symlink() and not _inside(_resolve(full), [root]):
        return "symlink points outside the catalog folder"
    return ""


def _resolve(path: Path) -> Path:
    """``path.resolve()`` that reports a symlink loop as ValueError (Python 3.11 raises
    RuntimeError, newer versions OSError)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"cannot resolve {str(path)!r}: symlink loop or unreadable") from exc


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, strict=True)
            line = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    yield reader.line_num, _Fatal(f"malformed CSV (rows after it unread): {exc}")
                    break
                line = reader.line_num
                if None in row:
                    yield line, "more values than header columns"
                    continue
                yield line, row
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read manifest {path}: {exc}") from exc


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield line_no, f"invalid JSON: {exc.msg}"
                    continue
                yield line_no, row if isinstance(row, dict) else "a JSONL row must be an object"
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read manifest {path}: {exc}") from exc


class _Fatal(str):
    """A row error after which the rest of the manifest could not be read."""


class _ManifestReader:
    def __init__(
        self,
        root: Path,
        roots: list[Path],
        id_column: str | None,
        image_column: str | None,
        numeric: tuple[str, ...],
    ) -> None:
        self.root, self.roots = str(root), [str(r) for r in roots]
        self.resolve = _Resolver()
        self.id_column, self.image_column, self.numeric = id_column, image_column, numeric
        self.complete = True

    def read(self, rows: Any, name: str) -> tuple[list[CatalogItem], list[RowError]]:
        items: list[CatalogItem] = []
        errors: list[RowError] = []
        seen: set[str] = set()
        for line, row in rows:
            where = f"{name}:{line}"
            if isinstance(row, str):
                self.complete = self.complete and not isinstance(row, _Fatal)
                errors.append(RowError(where, str(row)))
                continue
            try:
                item = self._item(row)
            except ValueError as exc:
                errors.append(RowError(where, str(exc), self._peek_id(row)))
                continue
            if item.id in seen:
                errors.append(RowError(where, f"duplicate id {item.id!r} (first row kept)"))
                continue
            seen.add(item.id)
            items.append(item)
        return items, errors

    def _peek_id(self, row: dict[str, Any]) -> str:
        """The id of a row that failed, when it has a usable one ('' otherwise)."""
        try:
            item_id = str(row[self._pick(row, self.id_column, ID_COLUMNS)] or "").strip()
        except (ValueError, KeyError):
            return ""
        ok = 0 < len(item_id) <= MAX_ID_LENGTH and all(ord(c) >= 0x20 for c in item_id)
        return item_id if ok else ""

    def _pick(self, row: dict[str, Any], explicit: str | None, options: tuple[str, ...]) -> str:
        if explicit:
            if explicit not in row:
                raise ValueError(f"missing column {explicit!r}")
            return explicit
        for col in options:
            if col in row:
                return col
        raise ValueError(f"missing column: one of {', '.join(options)}")

    def _item(self, row: dict[str, Any]) -> CatalogItem:
        id_col = self._pick(row, self.id_column, ID_COLUMNS)
        img_col = self._pick(row, self.image_column, IMAGE_COLUMNS)
        item_id = str(row[id_col] if row[id_col] is not None else "").strip()
        if not item_id:
            raise ValueError("empty id")
        if len(item_id) > MAX_ID_LENGTH or any(ord(c) < 0x20 for c in item_id):
            raise ValueError("id too long or contains control characters")
        image = str(row[img_col] or "").strip()
        if not image:
            raise ValueError(f"empty image for id {item_id!r}")
        metadata = {k: v for k, v in row.items() if k not in (id_col, img_col) and k}
        for col in self.numeric:
            if col in metadata:
                metadata[col] = _number(metadata[col], col)
        return CatalogItem(item_id, self._image_ref(image), metadata)

    def _image_ref(self, image: str) -> str:
        if image.startswith(("http://", "https://")):
            return image
        if "://" in image:
            raise ValueError(f"unsupported URL scheme in {image!r} (http and https only)")
        candidate = os.path.expanduser(image)  # "~nosuchuser/...": left as it is
        full = self.resolve(os.path.join(self.root, candidate))  # an absolute one stays
        if not _inside(full, self.roots):
            raise ValueError(f"image path {image!r} is outside the allowed catalog roots")
        return full


class _Resolver:
    """``Path.resolve()`` of many files, each folder resolved once.

    A manifest's rows share a few folders: resolving every path whole took ~50 us a row
    (8 lstat calls and pathlib's parsing; 5 s for 100,000 rows), every cron run. The real
    path of a file is the real path of its folder joined with its name unless the name is a
    symlink, which is then resolved whole, as before (loops and all).
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return str(_resolve(Path(path)))
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = str(_resolve(Path(folder)))
        full = os.path.join(real, name)
        try:
            link = stat.S_ISLNK(os.lstat(full).st_mode)
        except OSError:  # missing (the reader says so later), or not a folder above it
            link = False
        return str(_resolve(Path(full))) if link else full


def _number(value: Any, column: str) -> float | int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"column {column!r}: {value!r} is not a number")
    if isinstance(value, int | float):
        num = value
    else:
        try:
            num = float(str(value).strip().replace(",", ""))
        except ValueError:
            raise ValueError(f"column {column!r}: {value!r} is not a number") from None
    if not math.isfinite(num):
        raise ValueError(f"column {column!r}: {value!r} is not a finite number")
    return int(num) if float(num).is_integer() and isinstance(value, int) else float(num)


def _inside(path: str | Path, roots: Sequence[str | Path]) -> bool:
    """Whether the resolved ``path`` is one of the resolved ``roots`` or below one."""
    path = str(path)
    for root in map(str, roots):
        if path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep):
            return True
    return False
