"""The shopper benchmark: catalog builder (synthetic sources here), metrics and parsing helpers.

The real sources are Debian packages; these tests build their own cut-outs and backgrounds
and never need them (one slow test uses them when installed).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks import shopper_catalog as sc
from benchmarks import transfer_shopper as ts

CATEGORIES = ("round", "square", "triangle", "star")


def _cutout(i: int) -> Image.Image:
    """A textured product on a transparent background (shape by category, colour by item)."""
    rng = np.random.default_rng(i)
    size = 200
    texture = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    base = np.array([(37 * i) % 255, (91 * i) % 255, (53 * i + 80) % 255], np.uint8)
    pixels = (0.6 * base + 0.4 * texture).astype(np.uint8)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    shape = CATEGORIES[i % len(CATEGORIES)]
    if shape == "round":
        draw.ellipse((20, 30, 180, 170), fill=255)
    elif shape == "square":
        draw.rectangle((30, 30, 170, 170), fill=255)
    elif shape == "triangle":
        draw.polygon([(100, 15), (185, 185), (15, 185)], fill=255)
    else:
        draw.polygon([(100, 10), (125, 80), (190, 80), (135, 120), (160, 190), (100, 145),
                      (40, 190), (65, 120), (10, 80), (75, 80)], fill=255)  # fmt: skip
    img = Image.fromarray(pixels).convert("RGBA")
    img.putalpha(mask)
    return img


@functools.cache
def _backgrounds() -> tuple[Image.Image, ...]:
    out = []
    for k in range(3):
        rng = np.random.default_rng(100 + k)
        grad = np.linspace(0, 255, 400)[None, :, None] * rng.uniform(0.3, 1, size=3)
        noise = rng.normal(0, 20, size=(300, 400, 3))
        out.append(Image.fromarray(np.clip(grad + noise, 0, 255).astype(np.uint8)))
    return tuple(out)


def _products(n: int) -> list[sc.Product]:
    return [sc.Product(f"item-{i:03d}", CATEGORIES[i % len(CATEGORIES)], f"Item {i}",
                       "synthetic") for i in range(n)]  # fmt: skip


def _build(out: Path, n: int = 12, seed: int = 0) -> dict[str, object]:
    return sc.write_catalog(out, _products(n), _cutout, _backgrounds(), seed=seed, size=480)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_catalog_and_queries_are_consistent(tmp_path: Path) -> None:
    summary = _build(tmp_path)
    catalog = _rows(tmp_path / "catalog.csv")
    queries = _rows(tmp_path / "queries.csv")
    assert list(catalog[0]) == ["id", "image", "category", "title"]
    assert list(queries[0]) == ["query_image", "id", "category"]
    assert len(catalog) == len(queries) == 12 == summary["items"]
    assert len({r["id"] for r in catalog}) == 12
    assert [r["id"] for r in queries] == [r["id"] for r in catalog]
    assert [r["category"] for r in queries] == [r["category"] for r in catalog]
    assert summary["categories"] == {c: 3 for c in sorted(CATEGORIES)}
    for row in catalog:
        with Image.open(tmp_path / row["image"]) as img:
            assert img.format == "JPEG" and img.size == (480, 480)
    for row in queries:
        assert not row["query_image"].startswith("images/")  # never inside the indexed folder
        with Image.open(tmp_path / row["query_image"]) as img:
            assert img.format == "JPEG" and sorted(img.size) == [480, 640]


def test_queries_differ_from_their_catalog_photo(tmp_path: Path) -> None:
    _build(tmp_path, n=6)
    for row in _rows(tmp_path / "queries.csv"):
        query = Image.open(tmp_path / row["query_image"]).convert("L").resize((64, 64))
        shot = Image.open(tmp_path / f"images/{row['id']}.jpg").convert("L").resize((64, 64))
        diff = np.abs(np.asarray(query, float) - np.asarray(shot, float)).mean()
        assert diff > 10, row["id"]


def test_same_seed_same_bytes_other_seed_other_queries(tmp_path: Path) -> None:
    _build(tmp_path / "a", n=4, seed=3)
    _build(tmp_path / "b", n=4, seed=3)
    _build(tmp_path / "c", n=4, seed=4)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    changed = [k for k in a if k.startswith("queries/") and a[k] != c[k]]
    assert len(changed) == 4


def test_shopper_photo_scales_with_strength() -> None:
    cut, bgs = _cutout(1), _backgrounds()
    easy = sc.shopper_photo(cut, bgs, np.random.default_rng(0), sc.Strength().scaled(0.0))
    assert sorted(easy.size) == [480, 640]
    s = sc.Strength().scaled(0.0)
    assert s.rotate == 0 and s.noise == 0 and s.min_scale == pytest.approx(0.9)
    assert s.min_quality == 85
    hard = sc.Strength().scaled(2.0)
    assert hard.rotate == 50 and hard.min_quality < sc.Strength().min_quality


def test_photo_test_drops_flat_drawings() -> None:
    drawing = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((10, 10, 110, 110), fill=(200, 30, 30, 255))
    assert not sc.is_photo(drawing)
    assert sc.is_photo(_cutout(2))


def test_stamp_folders_map_to_categories() -> None:
    assert sc.category_of("food/fruit/apple.png") == "fruit & nuts"
    assert sc.category_of("food/vegetables/carrot.png") == "vegetables"
    assert sc.category_of("animals/mammals/aquatic/seal.png") == "sea life"
    assert sc.category_of("animals/mammals/cats/lion.png") == "mammals"
    assert sc.category_of("plants/mushrooms/x.png") == "vegetables"
    assert sc.category_of("town/roadsigns/yield.png") is None
    assert len(sc.CATEGORIES) >= 8


def test_balanced_pick_round_robins_categories() -> None:
    items = [(sc.Product(f"p{i}", "ab"[i % 2] if i < 10 else "c", "", ""), Path()) for i in
             range(16)]  # fmt: skip
    picked = sc.pick_balanced(items, 9, seed=0)
    cats = [items[i][0].category for i in picked]
    assert len(picked) == 9 == len(set(picked))
    assert sorted(cats.count(c) for c in "abc") == [3, 3, 3]
    assert sc.pick_balanced(items, 9, seed=0) == picked


def test_missing_sources_name_the_package(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(sc.MissingSource, match="apt-get install -y tuxpaint-stamps-default"):
        sc.discover_stamps(tmp_path / "nowhere")
    monkeypatch.setattr(sc, "SHARE", tmp_path)
    paths, missing = sc.background_paths()
    assert paths == [] and missing == ["mate-backgrounds", "plasma-workspace-wallpapers"]


@pytest.mark.slow
@pytest.mark.skipif(not sc.STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed")
def test_real_sources_build_a_small_catalog(tmp_path: Path) -> None:
    if sc.background_paths()[1]:
        pytest.skip("background wallpaper packages not installed")
    summary = sc.build(tmp_path, 22, 0, sc.Strength())
    assert summary["items"] == 22 and len(summary["categories"]) == 11
    assert len(_rows(tmp_path / "catalog.csv")) == 22


# -- metrics -------------------------------------------------------------------------------
def test_ranks_and_recall_on_hand_made_results() -> None:
    results = [["a", "x", "y"], ["x", "b"], ["x", "y"], []]
    ranks = ts.ranks_of(results, ["a", "b", "c", "d"])
    assert ranks.tolist() == [1, 2, 0, 0]
    assert ts.recall_hits(ranks, 1).tolist() == [True, False, False, False]
    assert ts.recall_hits(ranks, 5).tolist() == [True, True, False, False]


def test_metrics_with_categories_and_intervals() -> None:
    cat = {"a": "shoes", "b": "bags", "x": "shoes", "y": "bags"}
    m = ts.metrics([["a"], ["x", "b"], ["y"], ["x"]], ["a", "b", "x", "y"],
                   ["shoes", "bags", "shoes", "bags"], cat)  # fmt: skip
    assert m["r@1"]["value"] == 0.25 and m["r@5"]["value"] == 0.5
    assert m["category@1"]["value"] == 0.25  # only the first query's top hit has its category
    lo, hi = m["r@5"]["ci95"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    assert m["per_query"]["r@5"] == [1, 1, 0, 0]


def test_bootstrap_interval() -> None:
    assert ts.bootstrap_ci(np.ones(50)) == (1.0, 1.0)
    hits = np.array([1] * 60 + [0] * 40)
    lo, hi = ts.bootstrap_ci(hits, seed=1)
    assert 0.45 < lo < 0.6 < hi < 0.75
    wide = ts.bootstrap_ci(hits[::10], seed=1)
    assert wide[1] - wide[0] > hi - lo
    assert ts.bootstrap_ci(hits, seed=1) == (lo, hi)


def test_sign_test_exact_values() -> None:
    base = np.array([0] * 10 + [1] * 5, bool)
    new = np.array([1] * 10 + [1] * 5, bool)
    t = ts.sign_test(base, new)
    assert (t["fixed"], t["broken"], t["queries"]) == (10, 0, 15)
    assert t["p"] == pytest.approx(2 / 1024)
    assert ts.sign_test(np.array([1, 0], bool), np.array([0, 1], bool))["p"] == 1.0
    assert ts.sign_test(base, base)["p"] == 1.0
    t = ts.sign_test(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool))
    assert (t["fixed"], t["broken"]) == (0, 3) and t["p"] == pytest.approx(0.25)


def test_verdict_and_report_parsing() -> None:
    text = 'progress...\n{\n  "improved": false,\n  "best_epoch": 2\n}\n'
    report = ts.last_json(text)
    assert report == {"improved": False, "best_epoch": 2}
    ok = {"rc": 0, "stderr_tail": ""}
    assert ts.verdict_of(ok, report) == "not improved"
    assert ts.verdict_of(ok, {"verdict": "improved"}) == "improved"
    assert ts.verdict_of({"rc": 1, "stderr_tail": "model is NOT better"}, None) == "not improved"
    assert ts.verdict_of({"rc": 2, "stderr_tail": "boom"}, None) == "failed (exit 2)"
    assert ts.last_json("no json here") is None


def test_default_lr_read_from_help() -> None:
    text = "  --lr LR               learning rate of the new head (default: 0.001)\n"
    assert ts.default_lr(text) == 0.001
