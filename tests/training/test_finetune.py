"""Fine-tuning on CPU in seconds: the loss falls, recall improves, the export loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from search.embedder import Embedder
from search.errors import ConfigError
from tests.helpers import PHOTOS, photo, variant, write_manifest
from training.evaluation.labels import load_labelled
from training.evaluation.retrieval import Cutoffs, retrieval_metrics
from training.finetune import FinetuneOptions, finetune, read_verdict
from training.finetune.augment import change_background, product_augment
from training.finetune.data import pk_batches
from training.finetune.losses import batch_hard_triplet_loss, supcon_loss


def grouped_catalog(root: Path, per_product: int = 1) -> Path:
    """8 real photos (x shots); the label joins two unrelated products (a "collection"),
    so the pretrained model does not already get every neighbour right."""
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for p, name in enumerate(PHOTOS):
        base = photo(name, 160)
        for k in range(per_product):
            rel = f"img/{name}-{k}.jpg"
            variant(base, k).save(root / rel, "JPEG", quality=90)
            rows.append(
                {"id": f"{name}-{k}", "image": rel, "collection": f"C{p % 4}", "product": name}
            )
    return write_manifest(root, rows)


def training_recall(model: Embedder, manifest: Path) -> float:
    catalog = load_labelled(manifest, "collection")
    vectors = model.embed_images([i.image for i in catalog.items])
    res = retrieval_metrics(
        vectors, catalog.labels, np.ones(len(catalog), bool), cutoffs=Cutoffs((1,))
    )
    return res.recall[1]


@pytest.mark.slow  # ~17 s: the quick loop keeps the partial and CLI finetune tests
def test_head_finetune_lowers_loss_and_raises_training_recall(
    tmp_path: Path, settings, embedder: Embedder
) -> None:
    manifest = grouped_catalog(tmp_path / "cat")
    opts = FinetuneOptions(
        strategy="head",
        label_column="collection",
        dim=32,
        epochs=40,
        patience=40,
        lr=5e-3,
        holdout=0.01,  # train on (almost) everything: this test measures training recall
        val_fraction=0.3,
        seed=0,
    )
    out = tmp_path / "model"
    report = finetune(manifest, settings, out, opts)
    losses = [e["loss"] for e in report.history.epochs]
    assert losses[-1] < 0.7 * losses[0]
    tuned = Embedder(f"local-dir:{out}", device="cpu", cache_dir=settings.model.cache_dir)
    before, after = training_recall(embedder, manifest), training_recall(tuned, manifest)
    assert before < 1.0
    assert after > before
    # an ordinary open_clip folder: image-only, the head's size, the base's preprocessing
    assert tuned.info.dim == 32 and not tuned.has_text
    assert tuned.info.preprocess == embedder.info.preprocess
    verdict = read_verdict(out)
    assert verdict is not None
    assert verdict["strategy"] == "head"
    assert verdict["base_model"]["name"] == "builtin:efficientnet-lite0"
    assert verdict["improved"] == report.improved
    assert "recall@1" in verdict["metrics"]["after"]["recall"]
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["vision_cfg"]["timm_proj"] == "linear"
    assert cfg["model_cfg"]["embed_dim"] == 32
    assert (out / "finetune_report.json").is_file()


@pytest.mark.slow  # ~10 s; the quick loop keeps the partial and CLI finetune tests
def test_extra_training_catalog_adds_train_items_only_and_never_a_catalog_photo(
    tmp_path: Path, settings
) -> None:
    manifest = grouped_catalog(tmp_path / "cat")  # ids <name>-0
    extra_root = tmp_path / "extra"
    rows = []
    (extra_root / "img").mkdir(parents=True)
    for p, name in enumerate(PHOTOS):
        rel = f"img/{name}-x.jpg"
        variant(photo(name, 160), 2).save(extra_root / rel, "JPEG", quality=90)
        rows.append({"id": f"{name}-x", "image": rel, "collection": f"C{p % 4}"})
    # the same id as a catalog item, and a catalog photo's bytes under a new id: both dropped
    rows.append({"id": f"{PHOTOS[0]}-0", "image": f"img/{PHOTOS[1]}-x.jpg", "collection": "C1"})
    (extra_root / "img" / "copy.jpg").write_bytes((tmp_path / "cat/img/coffee-0.jpg").read_bytes())
    rows.append({"id": "copy", "image": "img/copy.jpg", "collection": "C1"})
    extra = write_manifest(extra_root, rows)
    common = dict(strategy="head", label_column="collection", dim=16, epochs=3, patience=3)
    common |= dict(ce_weight=0.5)  # and the cross-entropy term runs in a real training loop
    common |= dict(holdout=0.2, val_fraction=0.3, seed=0)
    plain = finetune(manifest, settings, tmp_path / "m0", FinetuneOptions(**common))
    more = finetune(
        manifest, settings, tmp_path / "m1", FinetuneOptions(**common, extra_train=str(extra))
    )
    assert more.items["extra_dropped"] == 2
    assert more.items["train"] == plain.items["train"] + len(PHOTOS)
    assert more.items["val"] == plain.items["val"]
    assert more.items["held_out"] == plain.items["held_out"]
    assert more.options["extra_train"] == str(extra)


def test_add_training_items_appends_after_the_pool() -> None:
    from indexer.catalog import CatalogItem
    from training.evaluation.labels import LabelledCatalog
    from training.finetune.data import Split, add_training_items

    def cat(ids: list[str]) -> LabelledCatalog:
        return LabelledCatalog(
            [CatalogItem(i, f"/nonexistent/{i}.png", {}) for i in ids], [i[0] for i in ids], "x"
        )

    pool = cat(["a1", "b1", "a2"])
    split = Split(np.array([0, 2]), np.array([1]), 1)
    merged, new, dropped = add_training_items(pool, split, cat(["a9", "b1", "b9"]), pool)
    assert dropped == 1
    assert merged.ids == ["a1", "b1", "a2", "a9", "b9"]
    assert new.train.tolist() == [0, 2, 3, 4] and new.val.tolist() == [1]
    assert new.held_out == 1


def test_partial_trains_only_the_top_layers(tmp_path: Path, settings) -> None:
    manifest = grouped_catalog(tmp_path / "cat", per_product=2)
    opts = FinetuneOptions(
        strategy="partial",
        label_column="collection",
        dim=16,
        epochs=1,
        batch_size=8,
        unfreeze=2,
        holdout=0.01,
        val_fraction=0.25,
        max_items=8,
    )
    out = tmp_path / "partial"
    report = finetune(manifest, settings.replace(workers=0), out, opts)
    assert len(report.history.epochs) == 1
    from safetensors.torch import load_file

    base_dir = Path(settings.model.cache_dir) / "models" / "efficientnet-lite0-v1"
    base = load_file(str(base_dir / "open_clip_model.safetensors"))
    tuned = load_file(str(out / "open_clip_model.safetensors"))
    stem = "visual.trunk.conv_stem.weight"
    top = "visual.trunk.conv_head.weight"
    assert torch.equal(base[stem], tuned[stem])  # frozen early layer unchanged
    assert not torch.equal(base[top], tuned[top])  # unfrozen top layer trained
    model = Embedder(f"local-dir:{out}", device="cpu", cache_dir=settings.model.cache_dir)
    assert model.embed_images([photo("coffee", 96)]).shape == (1, 16)


def test_cli_reports_a_model_that_is_not_better_and_exits_1(
    tmp_path: Path, settings, monkeypatch, capsys
) -> None:
    manifest = grouped_catalog(tmp_path / "cat", per_product=3)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    # the base finds every product's other shot; one epoch at a tiny rate leaves a random
    # 2-d projection of it, which cannot do as well
    argv = ["finetune", str(manifest), "-o", str(tmp_path / "bad"), "--label-column", "product"]
    argv += ["--dim", "2", "--epochs", "1", "--lr", "1e-6", "--holdout", "0.3", "--json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["improved"] is False
    assert report["after"]["recall"]["recall@1"] <= report["before"]["recall"]["recall@1"] == 1.0
    assert "NOT significantly better" in captured.err
    assert report["verdict"]["improved"] is False
    assert read_verdict(tmp_path / "bad")["improved"] is False


def test_losses_prefer_grouped_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(
        torch.tensor([[1, 0.1], [1, -0.1], [-1, 0.1], [-1, -0.1]]), dim=1
    )
    bad = torch.nn.functional.normalize(
        torch.tensor([[1, 0.1], [-1, 0.1], [1, -0.1], [-1, -0.1]]), dim=1
    )
    assert supcon_loss(good, labels) < supcon_loss(bad, labels)
    assert batch_hard_triplet_loss(good, labels, 0.2).item() == pytest.approx(0.0)
    assert batch_hard_triplet_loss(bad, labels, 0.2).item() > 1.0


def test_cross_entropy_term_adds_a_trained_classifier() -> None:
    from training.finetune.train import Objective

    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    plain = Objective(FinetuneOptions(dim=4), 4, "cpu")
    mixed = Objective(FinetuneOptions(dim=4, ce_weight=0.5), 4, "cpu")
    assert plain.groups() == [] and mixed.classifier is not None
    assert mixed.groups()[0]["params"][0].shape == (4, 4)
    ce = torch.nn.functional.cross_entropy(mixed.classifier(z), y)
    assert torch.allclose(mixed(z, y), plain(z, y) + 0.5 * ce)
    # the classifier learns: a few steps on fixed embeddings lower its cross-entropy
    opt = torch.optim.SGD(mixed.classifier.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        mixed(z, y).backward()
        opt.step()
    assert torch.nn.functional.cross_entropy(mixed.classifier(z), y) < ce
    with pytest.raises(ConfigError, match="ce-weight"):
        FinetuneOptions(ce_weight=-1)


def test_pk_batches_cover_every_item_with_positives() -> None:
    labels = np.repeat(np.arange(10), 6)
    batches = list(pk_batches(labels, 16, 4, np.random.default_rng(0)))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(60))
    for b in batches:
        _, counts = np.unique(labels[b], return_counts=True)
        assert counts.max() >= 2


def test_background_change_keeps_the_product() -> None:
    img = Image.new("RGB", (40, 40), (255, 255, 255))
    img.paste((200, 30, 30), (10, 10, 30, 30))
    out = change_background(img, random.Random(1), p=1.0)
    assert out.getpixel((0, 0)) != (255, 255, 255)
    assert out.getpixel((20, 20)) == (200, 30, 30)
    busy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert np.array_equal(
        np.asarray(change_background(busy, random.Random(1), p=1.0)), np.asarray(busy)
    )
    aug = product_augment(64)(photo("coffee", 120))
    assert aug.size == (64, 64)
