"""An on-disk cache of downloaded catalog images, keyed by URL, with HTTP validators.

Each entry is two files under ``<cache_dir>/urls/<sha256(url)[:2]>/``: the body
(``<key>.img``) and its record (``<key>.json``: url, ETag, Last-Modified, content type,
content hash, size, verified). Only bodies checked whole (length and decode) are stored;
entries written before that check existed carry ``verified: false`` and are checked once
on their next use (a body cut short by an old run is dropped and fetched again). The record's validators turn the next download into a conditional GET
(``If-None-Match`` / ``If-Modified-Since``); a ``304 Not Modified`` reuses the body, so a
nightly re-run downloads and embeds nothing for unchanged URLs. Writes go through a temp file
and ``os.replace``: concurrent runs and crashes never leave a torn entry behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheEntry:
    """What the cache knows about one URL."""

    url: str
    path: str  # the cached body
    content_hash: str
    size: int
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""
    verified: bool = False  # the body was checked whole (length, decode) before caching

    def validators(self) -> dict[str, str]:
        """Headers for a conditional GET of this URL."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class UrlCache:
    """Bodies and validators of downloaded URLs under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode()).hexdigest()
        folder = self.root / key[:2]
        return folder / f"{key}.img", folder / f"{key}.json"

    def get(self, url: str) -> CacheEntry | None:
        """The cached entry of ``url`` (None if absent or incomplete)."""
        body, record = self._paths(url)
        try:
            data = json.loads(record.read_text())
            entry = CacheEntry(**{**data, "path": str(body)})
        except (OSError, ValueError, TypeError):
            return None
        if entry.url != url or not body.is_file() or body.stat().st_size != entry.size:
            return None
        return entry

    def put(
        self,
        url: str,
        data: bytes,
        *,
        content_hash: str,
        content_type: str = "",
        etag: str = "",
        last_modified: str = "",
        verified: bool = True,
    ) -> CacheEntry:
        """Store ``data`` for ``url`` atomically and return the new entry.

        Only bodies already checked whole belong here (the downloader verifies length and
        decode first); the body is written before its record, each through a temp file.
        """
        body, record = self._paths(url)
        body.parent.mkdir(parents=True, exist_ok=True)
        entry = CacheEntry(
            url, str(body), content_hash, len(data), content_type, etag, last_modified, verified
        )
        _atomic_write(body, data)
        self._write_record(entry)
        return entry

    def _write_record(self, entry: CacheEntry) -> None:
        meta = {k: v for k, v in asdict(entry).items() if k != "path"}
        _atomic_write(self._paths(entry.url)[1], json.dumps(meta, sort_keys=True).encode())

    def mark_verified(self, entry: CacheEntry) -> CacheEntry:
        """Record that an older entry's body was checked and is whole."""
        entry = replace(entry, verified=True)
        with contextlib.suppress(OSError):
            self._write_record(entry)
        return entry

    def drop(self, url: str) -> None:
        """Forget ``url`` (record first: a body without a record is never used)."""
        for path in reversed(self._paths(url)):
            with contextlib.suppress(OSError):
                path.unlink()

    def touch(self, entry: CacheEntry) -> None:
        """Mark an entry as used now (pruning keeps recently used entries)."""
        with contextlib.suppress(OSError):
            os.utime(self._paths(entry.url)[1])

    def prune(self, max_age_days: float = 30.0) -> int:
        """Remove entries not used for ``max_age_days``; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - max_age_days * 86400
        removed = 0
        for record in self.root.glob("*/*.json"):
            with contextlib.suppress(OSError):
                if record.stat().st_mtime < cutoff:
                    record.with_suffix(".img").unlink(missing_ok=True)
                    record.unlink()
                    removed += 1
        if removed:
            log.info("URL cache: pruned %d entries unused for %.0f days", removed, max_age_days)
        return removed


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
