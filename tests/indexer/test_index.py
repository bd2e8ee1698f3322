"""End to end on Milvus Lite with the real offline model: index, search, re-index."""

import os
import shutil
import time
from pathlib import Path

import pytest

from indexer.lock import IndexLock
from indexer.pipeline import IndexOptions, run_index
from search.config import Settings
from search.errors import LockHeldError, ProvenanceMismatch, SafetyRefusal
from search.searcher import Searcher
from search.store import MilvusStore
from tests.helpers import photo, variant, write_folder


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    write_folder(root, ["chelsea", "coffee", "rocket", "astronaut"], per_product=2)
    return root


def _index(root, settings, embedder, store, **opts):
    return run_index(root, settings, IndexOptions(**opts), embedder=embedder, store=store)


def test_index_folder_then_search_by_photo(catalog, settings, embedder) -> None:
    store = MilvusStore(settings)
    report = _index(catalog, settings, embedder, store)
    assert (report.seen, report.added, report.embedded, report.count) == (8, 8, 8, 8)
    assert report.ok and report.live and report.collection.startswith("catalog__")
    searcher = Searcher(settings, store=store, embedder=embedder)
    hits = searcher.similar(catalog / "coffee" / "coffee-1.jpg", limit=4)
    assert hits[0].id == "coffee/coffee-1.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[1].id == "coffee/coffee-0.jpg"  # the other photo of the same product
    assert hits[1].score > hits[2].score + 0.2
    # a new shot of the cat (not in the catalog) finds the cat photos first
    new_shot = variant(photo("chelsea"), 2)
    assert {h.id for h in searcher.similar(new_shot, limit=2)} == {
        "chelsea/chelsea-0.jpg",
        "chelsea/chelsea-1.jpg",
    }


def test_rerun_embeds_nothing_and_changes_touch_only_those_items(
    catalog, settings, embedder
) -> None:
    store = MilvusStore(settings)
    _index(catalog, settings, embedder, store)
    again = _index(catalog, settings, embedder, store)
    assert (again.embedded, again.added, again.updated, again.deleted, again.unchanged) == (
        0,
        0,
        0,
        0,
        8,
    )
    assert again.count == 8

    time.sleep(0.01)
    variant(photo("rocket"), 2).save(catalog / "rocket" / "rocket-0.jpg", "JPEG")  # changed
    shutil.copy(catalog / "coffee" / "coffee-0.jpg", catalog / "coffee" / "coffee-new.jpg")  # added
    (catalog / "astronaut" / "astronaut-1.jpg").unlink()  # deleted
    os.utime(catalog / "chelsea" / "chelsea-0.jpg")  # touched, same bytes
    third = _index(catalog, settings, embedder, store)
    assert (third.added, third.updated, third.deleted, third.embedded) == (1, 1, 1, 2)
    assert third.unchanged == 6 and third.count == 8
    ids = set(store.fingerprints(third.collection))
    assert "astronaut/astronaut-1.jpg" not in ids and "coffee/coffee-new.jpg" in ids
    fourth = _index(catalog, settings, embedder, store)
    assert fourth.embedded == 0 and fourth.unchanged == 8


def test_bad_files_are_skipped_with_reasons(catalog, settings, embedder) -> None:
    (catalog / "bad").mkdir()
    (catalog / "bad" / "zero.jpg").write_bytes(b"")
    (catalog / "bad" / "text.jpg").write_text("not an image at all")
    good = (catalog / "coffee" / "coffee-0.jpg").read_bytes()
    (catalog / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (catalog / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    from tests.search.test_images import _bomb_png

    (catalog / "bad" / "bomb.png").write_bytes(_bomb_png(40_000, 40_000))
    report = _index(catalog, settings, embedder, MilvusStore(settings))
    reasons = {f.id: f.reason for f in report.failed}
    assert set(reasons) == {
        f"bad/{n}" for n in ("zero.jpg", "text.jpg", "truncated.jpg", "corrupt.png", "bomb.png")
    }
    assert "empty" in reasons["bad/zero.jpg"] and "not an image" in reasons["bad/text.jpg"]
    assert "decompression bomb" in reasons["bad/bomb.png"]
    assert report.count == 8 and report.added == 8 and not report.ok


def test_mass_deletion_is_refused_unless_forced(catalog, settings, embedder, tmp_path) -> None:
    store = MilvusStore(settings)
    _index(catalog, settings, embedder, store)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SafetyRefusal, match="empty"):
        _index(empty, settings, embedder, store)
    for d in ("coffee", "rocket", "astronaut"):
        shutil.rmtree(catalog / d)
    with pytest.raises(SafetyRefusal, match="delete 6 of 8") as refused:
        _index(catalog, settings, embedder, store)
    assert "--collection NAME" in str(refused.value) and "--force-delete" in str(refused.value)
    plan = _index(catalog, settings, embedder, store, dry_run=True)  # the plan, not an error
    assert (plan.added, plan.updated, plan.deleted, plan.unchanged) == (0, 0, 6, 2)
    assert plan.refused == str(refused.value) and plan.count == 8 and plan.live
    assert store.count(store.require("catalog")) == 8  # nothing was touched
    forced = _index(catalog, settings, embedder, store, force_delete=True)
    assert forced.deleted == 6 and forced.count == 2


def test_dry_run_writes_nothing(catalog, settings, embedder) -> None:
    store = MilvusStore(settings)
    report = _index(catalog, settings, embedder, store, dry_run=True)
    assert report.dry_run and report.embedded == 0 and report.count == 0
    assert (report.added, report.deleted, report.refused) == (8, 0, "")
    assert store.collections() == []  # not even an empty collection was created


def test_a_second_run_on_the_same_collection_is_locked_out(catalog, settings, embedder) -> None:
    with IndexLock(settings), pytest.raises(LockHeldError, match="another indexing run"):
        _index(catalog, settings, embedder, MilvusStore(settings))


def test_the_lock_is_keyed_on_the_store_not_the_uri_spelling(tmp_path: Path) -> None:
    """127.0.0.1 and localhost (and ::1) name one server: one lock, two writers refused."""
    base = Settings.of(uri="http://127.0.0.1:19777", lock_dir=str(tmp_path / "locks"))
    spellings = ["http://localhost:19777", "grpc://[::1]:19777", "https://LOCALHOST:19777/"]
    with IndexLock(base):
        for uri in spellings:
            with pytest.raises(LockHeldError, match="another indexing run"):
                IndexLock(base.replace(uri=uri)).__enter__()
        # another port or another collection is another lock
        with IndexLock(base.replace(uri="http://localhost:19778")):
            pass
        with IndexLock(base.replace(collection="other")):
            pass
    lite = Settings.of(uri=str(tmp_path / "data" / "x.db"), lock_dir=str(tmp_path / "locks"))
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with IndexLock(lite):
        for uri in (f"{tmp_path}/data/../data/x.db", f"{tmp_path}/alias/x.db"):
            with pytest.raises(LockHeldError):
                IndexLock(lite.replace(uri=uri)).__enter__()


def test_other_model_is_refused_for_index_and_search(
    catalog, settings, embedder, cache_dir, tmp_path
) -> None:
    store = MilvusStore(settings)
    _index(catalog, settings, embedder, store)
    src = cache_dir / "models" / "efficientnet-lite0-v1"
    other = tmp_path / "other-model"
    shutil.copytree(src, other, ignore=shutil.ignore_patterns("*.sha256"))
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "open_clip_model.safetensors")
    first = next(k for k in weights if k.startswith("visual.trunk.conv_stem"))
    weights[first] = weights[first] * 0.5 + torch.randn_like(weights[first]) * 0.01
    save_file(weights, other / "open_clip_model.safetensors")
    from search.embedder import Embedder

    other_emb = Embedder(f"local-dir:{other}", device="cpu", cache_dir=cache_dir)
    assert other_emb.info.key != embedder.info.key
    with pytest.raises(ProvenanceMismatch, match="was built with model"):
        _index(catalog, settings, other_emb, store)
    with pytest.raises(ProvenanceMismatch, match="different embedding spaces"):
        Searcher(settings, store=store, embedder=other_emb).similar(photo("coffee"))
    # the blue-green way: build a new version beside the live one
    report = _index(catalog, settings, other_emb, store, new_version=True)
    assert report.count == 8 and not report.live
    assert store.resolve("catalog") != report.collection


def test_settings_from_env_and_overrides() -> None:
    s = Settings.from_env(
        {"VSEARCH_URI": "http://127.0.0.1:19530", "VSEARCH_BATCH_SIZE": "4"}, collection="x"
    )
    assert (s.store.uri, s.indexing.batch_size, s.store.collection, s.store.is_lite) == (
        "http://127.0.0.1:19530",
        4,
        "x",
        False,
    )
    assert Settings.from_env({}, model=None).model.model == "builtin:efficientnet-lite0"


def test_a_forked_child_does_not_keep_the_index_lock(settings) -> None:
    """An indexer killed by SIGKILL while its fork (a decode worker) lives on: the lock is
    free at once, because the fork closed its inherited copy."""
    import os
    import signal
    import time

    from indexer.lock import IndexLock

    ready_r, ready_w = os.pipe()
    indexer = os.fork()
    if indexer == 0:  # the "indexer": takes the lock, forks a long-lived worker
        with IndexLock(settings):
            if os.fork() == 0:
                time.sleep(30)  # the orphan-to-be
                os._exit(0)
            os.write(ready_w, b"x")
            time.sleep(30)
        os._exit(0)
    worker = 0
    try:
        assert os.read(ready_r, 1) == b"x"
        worker = int(Path(f"/proc/{indexer}/task/{indexer}/children").read_text().split()[0])
        os.kill(indexer, signal.SIGKILL)
        os.waitpid(indexer, 0)
        with IndexLock(settings):  # LockHeldError while the worker held its copy
            pass
    finally:
        if worker:
            os.kill(worker, signal.SIGKILL)
        os.close(ready_r)
        os.close(ready_w)
