"""``vsearch eval`` end to end: held-out retrieval metrics, caching, index vs exact, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from indexer.pipeline import run_index
from search.embedder import ModelInfo
from search.store import MilvusStore
from tests.helpers import PHOTOS, product_catalog, write_folder
from training.evaluation import (
    Questions,
    ann_vs_exact,
    evaluate_model,
    holdout_mask,
    load_labelled,
)


def test_held_out_products_find_their_other_photos(tmp_path: Path, settings, embedder) -> None:
    manifest = product_catalog(tmp_path / "cat", PHOTOS[:6], per_product=2)
    (tmp_path / "cat" / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    with manifest.open("a") as fh:
        fh.write("broken,img/broken.jpg,broken,x,Acme,1.00,coffee\n")
    catalog = load_labelled(manifest, "product")
    assert len(catalog) == 13 and catalog.label_column == "product"
    queries = holdout_mask(catalog.ids, 0.5, seed=3)
    first = evaluate_model(Questions(catalog, queries), embedder, settings)
    # every real held-out photo's nearest other item is its sibling shot (exact search)
    expected = int((queries & (np.array(catalog.ids) != "broken")).sum())
    assert first.result.queries == expected > 0
    assert first.result.recall[1] == 1.0 and first.result.map_at[10] == 1.0
    assert first.failed == 1 and first.embedded == 12
    assert len(first.result.curve) == 10 and first.result.curve == sorted(first.result.curve)
    again = evaluate_model(Questions(catalog, queries), embedder, settings)
    assert again.embedded == 0  # cached per model and image content
    assert again.result.recall == first.result.recall


def test_folder_catalog_labels_by_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "shop", ["coffee", "rocket"], per_product=2)
    catalog = load_labelled(tmp_path / "shop")
    assert catalog.label_column == "folder"
    assert catalog.labels == ["coffee", "coffee", "rocket", "rocket"]


@pytest.mark.parametrize(("index_type", "floor"), [("FLAT", 1.0), ("HNSW", 0.9)])
def test_index_recall_against_exact_search(settings, index_type: str, floor: float) -> None:
    settings = settings.replace(index_type=index_type)
    store = MilvusStore(settings)
    info = ModelInfo("test-vectors", "", "", 32, False, 224)
    store.create("catalog__v1", info)
    store.set_alias("catalog", "catalog__v1")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 32)).astype(np.float32)
    rows = [
        {
            "id": f"item-{i}",
            "vector": v.tolist(),
            "image": "",
            "content_hash": "",
            "meta_hash": "",
            "source_sig": "",
            "metadata": {},
        }
        for i, v in enumerate(vectors)
    ]
    store.upsert("catalog__v1", rows)
    store.flush("catalog__v1")
    res = ann_vs_exact(store, "catalog", k=10, queries=50, seed=0)
    assert (res.collection, res.count, res.queries, res.k) == ("catalog__v1", 300, 50, 10)
    assert floor <= res.recall <= 1.0
    if index_type == "FLAT":
        assert res.recall == pytest.approx(1.0)  # brute force both ways: identical


def test_cli_eval_writes_table_json_plot_and_index_recall(
    tmp_path: Path, settings, embedder, monkeypatch, capsys
) -> None:
    manifest = product_catalog(tmp_path / "cat", PHOTOS[:4], per_product=2)
    run_index(manifest, settings, embedder=embedder)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    out = tmp_path / "eval"
    argv = ["eval", str(manifest), "--label-column", "product", "--holdout", "0.5"]
    argv += ["--index", "--out", str(out), "--uri", settings.store.uri, "--workers", "0"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label_column"] == "product" and report["items"] == 8
    model = report["models"][0]
    assert model["model"] == "builtin:efficientnet-lite0" and model["dim"] == 1280
    assert model["recall"]["recall@1"] == 1.0 and model["map_at"]["mAP@10"] == 1.0
    assert report["ann"]["count"] == 8 and report["ann"]["recall"] == pytest.approx(1.0)
    assert json.loads((out / "report.json").read_text())["models"][0]["queries"] == model["queries"]
    assert (out / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "R@1" in table and "mAP@10" in table and "HNSW" in table
