"""The store, the indexer and the searcher on BOTH backends: Milvus Lite and a real server.

Every test runs twice through ``backend_settings`` (``lite`` and ``server``, the latter on the
session's Milvus 2.3.5 standalone with a unique collection alias per test). Differences
between the two are the store's business, never a skip here. Tests that leave the indexed
catalog as it is share one per backend (``indexed``; the alias tests add aliases and
collections of their own next to it); tests that change items get a fresh store each.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import IndexOptions, run_index
from search.config import Settings
from search.embedder import ModelInfo
from search.errors import (
    CollectionNotFound,
    ItemNotFound,
    ProvenanceMismatch,
    SafetyRefusal,
    StoreError,
)
from search.filters import Range
from search.searcher import Searcher
from search.store import MilvusStore
from tests.helpers import photo, product_catalog, variant
from tests.server_backend import BACKENDS, backend
from training.versions import promote

NAMES = ["chelsea", "coffee", "rocket", "astronaut"]
# Slow on both backends: this module is about Lite/server parity. On Lite alone, the quick
# loop checks the same behaviour in tests/indexer/test_index.py (re-run, change/add/delete),
# tests/search/test_store.py (provenance, aliases) and tests/search/test_searcher.py
# (filters, paging, by id).
pytestmark = pytest.mark.slow


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return product_catalog(tmp_path / "catalog", NAMES, per_product=2)


def _index(source: Path, settings: Settings, embedder, store: MilvusStore, **opts):
    return run_index(source, settings, IndexOptions(**opts), embedder=embedder, store=store)


@dataclass(frozen=True)
class Indexed:
    catalog: Path
    settings: Settings
    store: MilvusStore
    collection: str


@pytest.fixture(scope="module", params=BACKENDS)
def indexed(request, tmp_path_factory, cache_dir, embedder) -> Iterator[Indexed]:
    """The catalog indexed once per backend for this module; its tests only read it."""
    catalog = product_catalog(tmp_path_factory.mktemp("catalog"), NAMES, per_product=2)
    with backend(request.param, request, tmp_path_factory.mktemp("store"), cache_dir) as s:
        store = MilvusStore(s)
        report = _index(catalog, s, embedder, store)
        assert report.ok and report.count == 8
        yield Indexed(catalog, s, store, report.collection)


def test_reindex_is_idempotent_and_changes_touch_only_those_items(
    catalog, backend_settings, embedder
) -> None:
    """One store, three runs: first build, an unchanged re-run, then change/add/delete."""
    store = MilvusStore(backend_settings)
    first = _index(catalog, backend_settings, embedder, store)
    assert (first.seen, first.added, first.embedded, first.count) == (8, 8, 8, 8)
    assert first.live and store.resolve(backend_settings.store.collection) == first.collection
    again = _index(catalog, backend_settings, embedder, store)
    assert (again.embedded, again.added, again.updated, again.deleted) == (0, 0, 0, 0)
    assert again.unchanged == 8 and again.count == 8
    fingerprints = store.fingerprints(first.collection)
    assert sorted(fingerprints) == sorted(f"{n}-{k}" for n in NAMES for k in range(2))
    assert all(len(r.content_hash) == 32 for r in fingerprints.values())

    root = catalog.parent
    time.sleep(0.01)
    variant(photo("rocket"), 2).save(root / "img" / "rocket-0.jpg", "JPEG")  # new bytes
    os.utime(root / "img" / "chelsea-0.jpg")  # touched, same bytes
    lines = catalog.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    shutil.copy(root / "img" / "coffee-0.jpg", root / "img" / "coffee-9.jpg")
    added = rows[2].replace("coffee-0", "coffee-9")
    kept = [r for r in rows if not r.startswith("astronaut-1,")]
    kept = [r.replace("Globex", "Initech") if r.startswith("chelsea-1,") else r for r in kept]
    catalog.write_text("\n".join([header, *kept, added]) + "\n")
    report = _index(catalog, backend_settings, embedder, store)
    assert (report.added, report.deleted, report.embedded) == (1, 1, 2)
    assert report.updated == 2  # rocket-0 re-embedded, chelsea-1 re-tagged
    assert report.count == 8
    rows_now = {r["id"]: r for r in store.get(report.collection, ["chelsea-1", "coffee-9"])}
    assert rows_now["chelsea-1"]["metadata"]["brand"] == "Initech"
    assert rows_now["coffee-9"]["metadata"]["product"] == "coffee"
    assert store.get(report.collection, ["astronaut-1"]) == []


def test_search_by_photo_and_id_with_filters_and_paging(indexed: Indexed, embedder) -> None:
    searcher = Searcher(indexed.settings, store=indexed.store, embedder=embedder)
    hits = searcher.similar(indexed.catalog.parent / "img" / "coffee-1.jpg", limit=3)
    assert [h.id for h in hits[:2]] == ["coffee-1", "coffee-0"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-3) and hits[1].score > hits[2].score
    assert hits[0].metadata["category"] == "kitchen" and hits[0].image.endswith("coffee-1.jpg")

    page1 = searcher.similar(photo("chelsea"), limit=3)
    page2 = searcher.similar(photo("chelsea"), limit=3, offset=3)
    full = searcher.similar(photo("chelsea"), limit=6)
    assert [h.id for h in page1 + page2] == [h.id for h in full]
    assert {h.id for h in page1[:2]} == {"chelsea-0", "chelsea-1"}

    by_brand = searcher.similar(photo("chelsea"), limit=8, filters={"brand": "Acme"})
    assert {h.id for h in by_brand} == {"coffee-0", "coffee-1", "astronaut-0", "astronaut-1"}
    cheap = searcher.similar_by_id("rocket-0", limit=8, filters={"price": Range(max=21)})
    assert {h.id for h in cheap} == {"chelsea-0", "chelsea-1", "coffee-0", "coffee-1"}
    either = searcher.similar_by_id(
        "rocket-0", limit=8, filters={"category": ["vehicles", "people"]}
    )
    assert [h.id for h in either][0] == "rocket-1" and "rocket-0" not in {h.id for h in either}
    assert {h.id for h in either} == {"rocket-1", "astronaut-0", "astronaut-1"}
    assert searcher.get("coffee-0").metadata["price"] == pytest.approx(20.0)
    with pytest.raises(ItemNotFound):
        searcher.similar_by_id("no-such-item")
    assert searcher.info().count == 8


def test_provenance_refusal_on_model_mismatch(indexed: Indexed, embedder) -> None:
    store = indexed.store
    other = ModelInfo.from_dict(
        {**embedder.info.to_dict(), "name": "ViT-B-32", "pretrained": "other"}
    )
    with pytest.raises(ProvenanceMismatch, match="built with model"):
        store.check_model(indexed.collection, other)
    assert store.provenance(indexed.collection).key == embedder.info.key
    with pytest.raises(CollectionNotFound):
        store.require(indexed.settings.store.collection + "_missing")


def test_alias_promote_switches_live_collection(indexed: Indexed, embedder) -> None:
    """Blue is the shared indexed collection, under an alias of this test's own."""
    store, blue = indexed.store, indexed.collection
    alias = f"{indexed.settings.store.collection}_promo"
    store.set_alias(alias, blue)
    green = f"{alias}__green"
    store.create(green, embedder.info)  # with its vector index, loaded, not waiting on a build
    (index_name,) = store.client.list_indexes(green)
    index = store.client.describe_index(green, index_name)
    assert index["index_type"] == indexed.settings.store.index_type
    assert str(store.client.get_load_state(green)["state"]) == "Loaded"
    rows = store.get(blue, [f"{n}-{k}" for n in NAMES for k in range(2)], vectors=True)
    store.upsert(green, [{**r, "vector": list(r["vector"])} for r in rows[:-1]])
    store.flush(green)
    with pytest.raises(SafetyRefusal, match="1 items of the live collection missing"):
        promote(store, alias, green)
    store.upsert(green, [{**rows[-1], "vector": list(rows[-1]["vector"])}])
    done = promote(store, alias, green)
    assert (done.previous, done.current, done.count) == (blue, green, 8)
    assert store.resolve(alias) == green and alias in store.aliases(green)
    assert alias not in store.aliases(blue)
    searcher = Searcher(indexed.settings.replace(collection=alias), store=store, embedder=embedder)
    assert searcher.info().name == green
    assert store.resolve(indexed.settings.store.collection) == blue  # the shared alias is untouched
    vec = np.asarray(rows[0]["vector"], np.float32)
    assert store.search(green, vec[None, :], limit=1)[0][0].id == rows[0]["id"]


def test_set_alias_tolerates_a_parallel_creator(indexed: Indexed, embedder, monkeypatch) -> None:
    store = MilvusStore(indexed.settings)  # its own client: describe_alias is patched below
    alias = f"{indexed.settings.store.collection}_parallel"
    blue, green = indexed.collection, f"{alias}__green"
    store.create(green, embedder.info)
    store.set_alias(alias, blue)  # done by "another shard" a moment ago
    real = store.client.describe_alias
    seen: list[str] = []

    def stale_first(name: str):  # this run looked before the other one created the alias
        seen.append(name)
        if len(seen) == 1:
            raise RuntimeError(f"alias {name} not found")
        return real(name)

    monkeypatch.setattr(store.client, "describe_alias", stale_first)
    store.set_alias(alias, blue)  # same target: fine
    assert store.resolve(alias) == blue
    seen.clear()
    with pytest.raises(StoreError):  # a different target is a real conflict
        store.set_alias(alias, green)
    assert len(seen) == 2 and store.resolve(alias) == blue


def test_bounded_consistency_searches_find_the_same_items(indexed: Indexed, embedder):
    """The faster read level is accepted by both backends and converges to Strong's answer."""
    query = indexed.catalog.parent / "img" / "coffee-1.jpg"
    strong = [h.id for h in Searcher(indexed.settings, store=indexed.store, embedder=embedder
        ).similar(query, limit=4)]  # fmt: skip
    bounded_settings = indexed.settings.replace(search_consistency="Bounded")
    bounded = Searcher(bounded_settings, store=MilvusStore(bounded_settings), embedder=embedder)
    deadline = time.monotonic() + 30  # a server's grace time is 5 s by default
    while True:
        found = [h.id for h in bounded.similar(query, limit=4)]
        if found == strong or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found == strong and strong[:2] == ["coffee-1", "coffee-0"]
