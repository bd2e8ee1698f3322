"""Queries over a manifest catalog: by photo, by id, filters, paging, text, provenance."""

from pathlib import Path

import pytest

from indexer.pipeline import run_index
from search import ConfigError, ItemNotFound, Range, Searcher, TextSearchUnsupported
from search.errors import CollectionNotFound
from search.store import MilvusStore
from tests.helpers import PHOTOS, product_catalog


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, cache_dir, embedder):
    from search.config import Settings

    root = tmp_path_factory.mktemp("shop")
    manifest = product_catalog(root, PHOTOS[:6], per_product=3)
    settings = Settings.of(
        uri=str(root / "db" / "s.db"), cache_dir=str(cache_dir), device="cpu", workers=0, retries=0
    )
    store = MilvusStore(settings)
    report = run_index(manifest, settings, embedder=embedder, store=store)
    assert report.count == 18
    return Searcher(settings, store=store), root


def test_metadata_comes_back_typed(indexed) -> None:
    searcher, root = indexed
    hit = searcher.similar(root / "img" / "coffee-0.jpg", limit=1)[0]
    assert hit.id == "coffee-0" and hit.score == pytest.approx(1.0, abs=1e-3)
    assert hit.metadata == {
        "title": "coffee view 0",
        "category": "kitchen",
        "brand": "Acme",
        "price": 20.0,
        "product": "coffee",
    }
    assert Path(hit.image) == root / "img" / "coffee-0.jpg"


def test_more_like_this_excludes_the_item_and_finds_its_siblings(indexed) -> None:
    searcher, _ = indexed
    hits = searcher.similar_by_id("rocket-1", limit=3)
    assert "rocket-1" not in [h.id for h in hits]
    assert {h.id for h in hits[:2]} == {"rocket-0", "rocket-2"}
    with pytest.raises(ItemNotFound):
        searcher.similar_by_id("no-such-item")


def test_filters_apply_inside_milvus(indexed) -> None:
    searcher, root = indexed
    query = root / "img" / "chelsea-0.jpg"
    vehicles = searcher.similar(query, limit=20, filters={"category": "vehicles"})
    assert len(vehicles) == 6 and {h.metadata["category"] for h in vehicles} == {"vehicles"}
    cheap = searcher.similar(query, limit=20, filters={"price": Range(max=22)})
    assert cheap and all(h.metadata["price"] <= 22 for h in cheap)
    assert {h.id for h in cheap} == {
        "chelsea-0",
        "chelsea-1",
        "chelsea-2",
        "coffee-0",
        "coffee-1",
        "coffee-2",
    }
    both = searcher.similar(
        query, limit=20, filters={"brand": ["Acme"], "price": {"gte": 30, "lt": 42}}
    )
    assert {h.id for h in both} == {"astronaut-0", "astronaut-1"}  # prices 40, 41 (not 42)
    sneaky = searcher.similar(
        query, limit=20, filters={"category": 'animals" or metadata["category"] != "'}
    )
    assert sneaky == []


def test_paging_with_offset_continues_the_ranking(indexed) -> None:
    searcher, root = indexed
    query = root / "img" / "astronaut-1.jpg"
    full = searcher.similar(query, limit=12)
    pages = searcher.similar(query, limit=6) + searcher.similar(query, limit=6, offset=6)
    assert [h.id for h in pages] == [h.id for h in full]
    assert [h.score for h in full] == sorted((h.score for h in full), reverse=True)
    with pytest.raises(ConfigError):
        searcher.similar(query, limit=0)
    with pytest.raises(ConfigError):
        searcher.similar(query, offset=-1)


def test_similarity_floor_drops_weak_matches(indexed) -> None:
    searcher, root = indexed
    hits = searcher.similar(root / "img" / "coffee-2.jpg", limit=18, min_score=0.8)
    assert {h.metadata["product"] for h in hits} == {"coffee"}


def test_text_search_is_refused_for_the_image_only_model(indexed) -> None:
    searcher, _ = indexed
    assert searcher.has_text() is False
    with pytest.raises(TextSearchUnsupported, match="image-only"):
        searcher.similar_text("a red rocket")


def test_info_and_get(indexed) -> None:
    searcher, _ = indexed
    info = searcher.info()
    assert info.count == 18 and info.aliases == ("catalog",) and info.model.dim == 1280
    assert searcher.get("coffee-1").metadata["title"] == "coffee view 1"


def test_missing_collection_says_how_to_fix_it(settings) -> None:
    with pytest.raises(CollectionNotFound, match="vsearch index"):
        Searcher(settings).similar(b"whatever")
