"""Photo queries searched whole and as crops, each item keeping its best score."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import run_index
from search import Searcher
from search.config import Settings
from search.errors import ConfigError
from search.query_crops import SCHEMES, crops, fuse
from search.store import MilvusStore
from tests.helpers import PHOTOS, photo, write_manifest


def test_crops_cover_the_photo_whole_first() -> None:
    img = Image.new("RGB", (200, 100))
    views = crops(img, "five")
    assert len(views) == len(SCHEMES["five"]) == 6
    assert views[0] is img and views[1].size == (140, 70)
    assert crops(img, "none") == [img]
    grid = crops(img, "nine")
    assert len(grid) == 10 and grid[1].size == (120, 60) and grid[-1].size == (120, 60)


def test_fuse_keeps_each_items_best_score_best_first() -> None:
    a = [("x", 0.5, 1), ("y", 0.4, 2)]
    b = [("y", 0.9, 3), ("z", 0.1, 4)]
    assert fuse([a, b]) == [("y", 0.9, 3), ("x", 0.5, 1), ("z", 0.1, 4)]


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="query_crops"):
        Settings.of(query_crops="seven")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, cache_dir, embedder):
    """Eight products on white; queries show one small, off-centre, in a busy scene."""
    root = tmp_path_factory.mktemp("crops")
    (root / "img").mkdir()
    rows = []
    for name in PHOTOS:
        canvas = Image.new("RGB", (224, 224), (248, 248, 248))
        canvas.paste(photo(name, 180), (22, 22))
        canvas.save(root / "img" / f"{name}.jpg", quality=92)
        rows.append({"id": name, "image": f"img/{name}.jpg", "category": "c"})
    manifest = write_manifest(root, rows)
    settings = Settings.of(
        uri=str(root / "db" / "c.db"), cache_dir=str(cache_dir), device="cpu", workers=0, retries=0
    )
    store = MilvusStore(settings)
    run_index(manifest, settings, embedder=embedder, store=store)
    return settings, store, embedder, root


def scene(product: str, seed: int) -> Image.Image:
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).integers(0, 255, (480, 480, 3), dtype=np.uint8)
    frame = Image.fromarray(noise).resize((480, 480))
    small = photo(product, 150)
    frame.paste(small, (rng.choice((10, 320)), rng.choice((10, 330))))
    return frame


def test_small_off_centre_products_are_found_better_with_crops(shop) -> None:
    settings, store, embedder, _ = shop
    whole = Searcher(settings.replace(query_crops="none"), store=store, embedder=embedder)
    cropped = Searcher(settings, store=store, embedder=embedder)
    queries = [(name, scene(name, n)) for n, name in enumerate(PHOTOS)]
    hits_whole = sum(whole.similar(q, limit=1)[0].id == name for name, q in queries)
    hits_crops = sum(cropped.similar(q, limit=1)[0].id == name for name, q in queries)
    assert hits_crops > hits_whole


def test_crops_keep_exact_matches_first_and_page_without_repeats(shop) -> None:
    settings, store, embedder, root = shop
    searcher = Searcher(settings, store=store, embedder=embedder)
    hits = searcher.similar(root / "img" / "coffee.jpg", limit=3)
    assert hits[0].id == "coffee" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    first = searcher.similar(root / "img" / "rocket.jpg", limit=4)
    second = searcher.similar(root / "img" / "rocket.jpg", limit=4, offset=4)
    ids = [h.id for h in first + second]
    assert len(ids) == len(set(ids)) == 8
    scores = [h.score for h in first + second]
    assert scores == sorted(scores, reverse=True)
