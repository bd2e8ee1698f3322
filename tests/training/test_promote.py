"""Model versions and the blue-green switch against Milvus Lite, end to end.

Index with model A (live), build a second version with model B (``--new-version``),
promote B while searches run in a loop (no errors, answers move from A to B without a
restart), list versions, drop the old one; refusals for incomplete or worse versions.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from cli.main import main
from indexer.pipeline import IndexOptions, run_index
from search.builtin_model import builtin_model_dir
from search.embedder import Embedder
from search.errors import SafetyRefusal
from search.searcher import Searcher
from search.store import MilvusStore
from tests.helpers import photo, product_catalog, variant
from training.versions import drop_collection, promote


@pytest.fixture
def two_versions(tmp_path: Path, settings, embedder):
    """Catalog indexed with the built-in model (live) and with a copy of it (not live)."""
    manifest = product_catalog(tmp_path / "cat", per_product=2)
    model_b_dir = tmp_path / "model-b"
    shutil.copytree(builtin_model_dir(settings.model.cache_dir), model_b_dir)
    model_b = Embedder(f"local-dir:{model_b_dir}", device="cpu", cache_dir=settings.model.cache_dir)
    store = MilvusStore(settings)
    a = run_index(manifest, settings, embedder=embedder, store=store)
    b = run_index(
        manifest,
        settings.replace(model=model_b.info.name),
        IndexOptions(new_version=True),
        embedder=model_b,
        store=store,
    )
    assert a.live and not b.live and a.collection != b.collection
    return store, manifest, a.collection, b.collection, model_b_dir


@pytest.mark.slow  # seconds of indexing and searching; the quick loop keeps this file's other tests
def test_promote_switches_live_searches_without_errors(two_versions, settings) -> None:
    store, manifest, old, new, _ = two_versions
    searcher = Searcher(settings.replace(alias_ttl=0.0), store=store)
    query = variant(photo("coffee"), 1)
    assert searcher.info().name == old
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                hits = searcher.similar(query, limit=3)
                assert hits and hits[0].id.startswith("coffee")
                more = searcher.similar_by_id("rocket-0", limit=2)
                assert more[0].id == "rocket-1"
                seen.append(searcher.info().name)
            except BaseException as exc:  # noqa: BLE001 - the test counts every failure
                errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        result = promote(store, settings.store.collection, new)
        n = len(seen)
        while len(seen) < n + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert (result.previous, result.current, result.count) == (old, new, 8)
    assert seen[0] == old and seen[-1] == new  # answered by both, no restart
    assert store.resolve(settings.store.collection) == new
    assert store.exists(old)  # the old version stays until dropped


def test_collections_list_and_drop(two_versions, settings, capsys) -> None:
    store, _, old, new, model_b_dir = two_versions
    promote(store, settings.store.collection, new)
    store.close()  # the CLI opens the Lite database itself
    env = ["--uri", settings.store.uri]
    assert main(["collections", "--json", *env]) == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(listed) == {old, new}
    assert listed[new]["aliases"] == [settings.store.collection] and listed[old]["aliases"] == []
    assert listed[new]["count"] == listed[old]["count"] == 8
    assert listed[new]["model"]["name"] == f"local-dir:{model_b_dir.resolve()}"
    assert listed[old]["model"]["dim"] == 1280
    assert main(["collections", *env]) == 0
    table = capsys.readouterr().out
    live_line = next(line for line in table.splitlines() if line.startswith("LIVE"))
    assert new in live_line and "1280" in live_line
    assert main(["collections", "drop", new, *env]) == 5  # the live one is refused
    assert main(["collections", "drop", old, *env]) == 0
    assert main(["collections", "--json", *env]) == 0
    out = capsys.readouterr().out
    assert [c["name"] for c in json.loads(out[out.index("[") :])] == [new]


def test_promote_refuses_incomplete_or_worse_versions(two_versions, settings) -> None:
    store, _, old, new, model_b_dir = two_versions
    store.delete(new, ["coffee-0"])
    store.flush(new)
    with pytest.raises(SafetyRefusal, match="1 items of the live collection missing"):
        promote(store, settings.store.collection, new)
    assert store.resolve(settings.store.collection) == old
    # a fine-tuned folder that scored worse than its base is never promoted by default
    config = model_b_dir / "open_clip_config.json"
    data = json.loads(config.read_text())
    data["vsearch"].update({"strategy": "head", "improved": False})
    config.write_text(json.dumps(data))
    with pytest.raises(SafetyRefusal, match="not score better"):
        promote(store, settings.store.collection, new, force=False, allow_worse=False)
    assert (
        promote(store, settings.store.collection, new, force=True, allow_worse=True).current == new
    )
    with pytest.raises(SafetyRefusal):
        drop_collection(store, settings.store.collection, new)


@pytest.mark.slow  # seconds of indexing and searching; the quick loop keeps this file's other tests
def test_promote_never_resurrects_items_deleted_from_live(
    two_versions, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version built before a sync that deleted items (and changed a price) is refused,
    with the one command that catches it up; after that command, promote succeeds and the
    deleted items stay deleted."""
    import csv
    import shlex

    store, manifest, old, new, _ = two_versions
    rows = list(csv.DictReader(manifest.open()))
    gone = {r["id"] for r in rows[:2]}
    kept = [dict(r) for r in rows[2:]]
    kept[0]["price"] = "999.00"  # a price changed since the build
    repriced = kept[0]["id"]
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    from search.embedder import Embedder

    base = Embedder("builtin:efficientnet-lite0", device="cpu", cache_dir=settings.model.cache_dir)
    synced = run_index(manifest, settings, embedder=base, store=store)  # the normal cron sync
    assert synced.collection == old and synced.deleted == 2
    with pytest.raises(SafetyRefusal) as refused:
        promote(store, settings.store.collection, new)
    message = str(refused.value)
    assert "2 items deleted from the live collection" in message, message
    assert "1 items whose image or metadata changed" in message and repriced in message
    assert store.resolve(settings.store.collection) == old  # nothing switched
    # the command the message names brings the version up to date
    command = shlex.split(message.split("`")[1].replace("CATALOG", str(manifest)))
    assert command[:2] == ["vsearch", "index"] and f"--collection={new}" not in command
    store.close()  # the CLI opens the Lite database itself
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)  # not the user's cache
    assert main(["--quiet", *command[1:], "--uri", settings.store.uri, "--device", "cpu"]) == 0
    store = MilvusStore(settings)
    result = promote(store, settings.store.collection, new)
    assert (result.previous, result.current, result.count) == (old, new, 6)
    assert store.get(new, sorted(gone)) == []  # not resurrected
    assert store.get(new, [repriced])[0]["metadata"]["price"] == 999.0
    searcher = Searcher(settings.replace(alias_ttl=0.0), store=store)
    hits = {m.id for m in searcher.similar(photo("coffee"), limit=20)}
    assert hits and not hits & gone
