"""A folder catalog full of hostile files: every one is indexed correctly or skipped with a
reason, and the run never aborts. Also: the same files as uploads to the query path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.hashing import content_hash
from indexer.pipeline import run_index
from search.config import Settings
from search.errors import ImageError
from search.searcher import Searcher
from search.store import MilvusStore
from tests.helpers import photo

from . import hostile
from .checks import stored_rows

pytestmark = pytest.mark.slow
FILES = hostile.catalog_files()


def _build(root: Path, outside: Path) -> None:
    root.mkdir()
    for name, (data, _) in FILES.items():
        (root / name).write_bytes(data)
    (root / "dir.jpg").mkdir()  # a folder with an image name: walked, its image indexed
    (root / "dir.jpg" / "inner.jpg").write_bytes(hostile.good_jpeg("coffee"))
    os.mkfifo(root / "fifo.jpg")  # opening it for reading would block forever
    os.symlink(root / "loop-b.jpg", root / "loop-a.jpg")
    os.symlink(root / "loop-a.jpg", root / "loop-b.jpg")
    os.symlink(root / "no-such-file.jpg", root / "dangling.jpg")
    os.symlink(root / "good.jpg", root / "link-inside.jpg")  # fine: stays in the catalog
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(hostile.good_jpeg("rocket"))
    os.symlink(outside / "secret.jpg", root / "link-outside.jpg")
    (root / os.fsdecode(b"caf\xe9-latin1.jpg")).write_bytes(hostile.good_jpeg("coffee"))
    (root / "zz-vanish.jpg").write_bytes(hostile.good_jpeg("rocket"))
    (root / "zz-change.jpg").write_bytes(hostile.good_jpeg("brick"))


@pytest.mark.timeout(300)
def test_hostile_folder_catalog_indexes_the_good_and_reports_the_bad(
    tmp_path: Path, settings: Settings, embedder
) -> None:
    root, outside = tmp_path / "catalog", tmp_path / "outside"
    _build(root, outside)
    s = settings.replace(batch_size=2, workers=0)
    changed = hostile.encode(photo("hubble_deep_field", 160), "JPEG")
    calls = []

    def progress(done: int, total: int) -> None:  # after the first batch: files vanish/change
        if not calls:
            (root / "zz-vanish.jpg").unlink()
            (root / "zz-change.jpg").write_bytes(changed)
        calls.append(done)

    report = run_index(root, s, embedder=embedder, progress=progress)

    must_decode = {n for n, (_, ok) in FILES.items() if ok}
    expected = must_decode | {"dir.jpg/inner.jpg", "link-inside.jpg", "zz-change.jpg"}
    failed = {f.id: f.reason for f in report.failed}
    rows = {f.id: f.reason for f in report.row_errors}
    refused = {n for n, (_, ok) in FILES.items() if not ok}
    assert refused | {"fifo.jpg", "zz-vanish.jpg", "dangling.jpg"} <= set(failed) | set(rows)
    assert "not found" in (failed.get("zz-vanish.jpg") or "")
    assert "decompression bomb" in failed["bomb-50000.png"]
    assert "empty" in failed["empty.png"]
    assert any("outside" in r for i, r in rows.items() if "link-outside" in i)
    assert any("UTF-8" in r for i, r in rows.items() if "latin1" in i)
    assert any("loop" in r for i, r in {**failed, **rows}.items() if "loop-a" in i)
    store = MilvusStore(s)
    stored = {r["id"]: r for r in stored_rows(store, report.collection)}
    assert set(stored) == expected
    assert "secret" not in str([r["image"] for r in stored.values()])
    # the file that changed mid-run: stored hash and vector belong to the same bytes
    assert stored["zz-change.jpg"]["content_hash"] == content_hash(changed)
    vec = embedder.embed_images([changed])[0]
    assert float(vec @ stored["zz-change.jpg"]["vector"]) > 0.999
    # a re-run is quiet: nothing is embedded again, the bad files are reported again
    again = run_index(root, s, embedder=embedder, store=store)
    assert again.embedded == 0 and again.count == len(expected)
    assert {f.id for f in again.failed} | {f.id for f in again.row_errors} >= refused


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_unreadable_file_is_skipped_with_permission_denied(
    tmp_path: Path, settings: Settings, embedder
) -> None:
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "ok.jpg").write_bytes(hostile.good_jpeg())
    (root / "locked.jpg").write_bytes(hostile.good_jpeg("coffee"))
    (root / "locked.jpg").chmod(0)
    report = run_index(root, settings, embedder=embedder)
    assert {f.id: f.reason for f in report.failed} == {"locked.jpg": "permission denied"}
    assert report.count == 1


def test_permission_error_is_reported_as_such(tmp_path: Path, monkeypatch) -> None:
    """As root chmod 000 does not stop reads, so the OS error is injected at ``open``."""
    from indexer import fetch

    target = tmp_path / "x.jpg"
    target.write_bytes(hostile.good_jpeg())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fetch.os, "open", denied)
    with pytest.raises(ImageError, match="permission denied"):
        fetch.read_image_bytes(str(target))


def test_hostile_uploads_to_the_query_path(tmp_path: Path, settings: Settings, embedder) -> None:
    """The same bytes as a shopper's upload: results, or an ImageError (never another error)."""
    root = tmp_path / "catalog"
    root.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        (root / f"{name}.jpg").write_bytes(hostile.good_jpeg(name))
    run_index(root, settings, embedder=embedder)
    searcher = Searcher(settings, embedder=embedder)
    for name, (data, ok) in sorted(FILES.items()):
        if ok:
            hits = searcher.similar(data, limit=3)
            assert len(hits) == 3, name
        else:
            with pytest.raises(ImageError):
                searcher.similar(data, limit=3)
    assert searcher.similar(FILES["good.jpg"][0], limit=1)[0].id == "chelsea.jpg"


def test_rows_sharing_image_bytes_are_embedded_once(
    tmp_path: Path, settings: Settings, embedder, monkeypatch
) -> None:
    """A manifest of 60 rows over 4 files, two of them byte-identical copies: 3 images are
    embedded (each distinct content once) and every row gets its file's vector."""
    from tests.helpers import write_manifest

    root = tmp_path / "catalog"
    root.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        (root / f"{name}.jpg").write_bytes(hostile.good_jpeg(name))
    (root / "rocket-copy.jpg").write_bytes(hostile.good_jpeg("rocket"))
    files = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "rocket-copy.jpg"]
    rows = [{"id": f"sku-{i:03d}", "image": files[i % 4], "n": str(i)} for i in range(60)]
    manifest = write_manifest(root, rows)
    embedded: list[int] = []
    original = embedder.embed_tensors

    def counting(batch):  # noqa: ANN001, ANN202
        embedded.append(len(batch))
        return original(batch)

    monkeypatch.setattr(embedder, "embed_tensors", counting)
    report = run_index(manifest, settings.replace(batch_size=8), embedder=embedder)
    assert sum(embedded) == 3, embedded
    assert (report.added, report.embedded, report.count) == (60, 60, 60)
    stored = {r["id"]: r for r in stored_rows(MilvusStore(settings), report.collection)}
    by_file: dict[str, list[float]] = {}
    for i, row in enumerate(rows):
        vector = stored[row["id"]]["vector"]
        key = "rocket" if "rocket" in row["image"] else row["image"]
        assert by_file.setdefault(key, vector) == vector, row
        assert stored[row["id"]]["content_hash"] == content_hash((root / files[i % 4]).read_bytes())
    assert len({tuple(v) for v in by_file.values()}) == 3
