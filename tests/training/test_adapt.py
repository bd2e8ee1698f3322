"""Adapting to "find this product": shopper views, the verdict, and the instance objective."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cli.main import main
from indexer.catalog import CatalogItem
from search.embedder import Embedder
from search.errors import ConfigError
from tests.helpers import PHOTOS, photo, write_manifest
from training.evaluation.backgrounds import load_backgrounds
from training.evaluation.labels import LabelledCatalog, choose_task
from training.evaluation.report import json_safe
from training.evaluation.scores import Queries, QueryScores, judge, score
from training.evaluation.shopper import EVAL, TRAIN, ViewFamily, backdrop_mask, shopper_view
from training.evaluation.significance import bootstrap, paired_test
from training.finetune import FinetuneOptions, read_verdict
from training.finetune.data import make_split
from training.finetune.label_verdict import check_answerable
from training.finetune.losses import koleo_loss
from training.finetune.towers import SplitTower, identity_head


def product_shots(root: Path, count: int = 40, size: int = 128) -> Path:
    """``count`` one-photo products: distinct crops of real photos on a studio-white backdrop,
    with a category per source photo and a title."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    sources = [photo(name, 256) for name in PHOTOS[:8]]
    rows = []
    for n in range(count):
        src = sources[n % len(sources)]
        w, h = src.size
        cw, ch = rng.randint(w // 3, w // 2), rng.randint(h // 3, h // 2)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        canvas = Image.new("RGB", (size, size), (246, 246, 244))
        crop = src.crop((x, y, x + cw, y + ch))
        crop.thumbnail((size * 3 // 4, size * 3 // 4))
        canvas.paste(crop, ((size - crop.width) // 2, (size - crop.height) // 2))
        rel = f"img/p{n:03d}.jpg"
        canvas.save(root / rel, "JPEG", quality=92)
        rows.append({"id": f"P{n:03d}", "image": rel, "category": PHOTOS[n % 8], "title": f"P {n}"})
    return write_manifest(root, rows)


# --- statistics and the verdict ----------------------------------------------------------


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_items() -> None:
    rng = np.random.default_rng(0)
    small = (rng.random(20) < 0.6).astype(float)
    large = (rng.random(400) < 0.6).astype(float)
    a = bootstrap(small, np.arange(20))
    b = bootstrap(large, np.arange(400))
    assert a.low <= a.value <= a.high and b.low <= b.value <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 3


def test_paired_test_is_exact_and_works_by_item() -> None:
    items = np.arange(10)
    better, worse = paired_test(np.ones(10), np.zeros(10), items)
    assert better == pytest.approx(1 / 1024) and worse == 1.0
    # 10 queries of ONE item are one piece of evidence, not ten
    better, _ = paired_test(np.ones(10), np.zeros(10), np.zeros(10, int))
    assert better == 0.5
    assert paired_test(np.ones(5), np.ones(5), np.arange(5)) == (1.0, 1.0)


def _scores(hits: list[int], cats: list[bool] | None = None) -> QueryScores:
    rank = np.where(np.array(hits) > 0, 1.0, np.inf)
    return QueryScores(np.arange(len(hits)), rank, None if cats is None else np.array(cats))


def test_verdict_needs_a_significant_gain_and_no_guarded_loss() -> None:
    base = _scores([0] * 20 + [1] * 10)
    assert judge(_scores([1] * 30), base).improved
    small = judge(_scores([1] * 2 + [0] * 18 + [1] * 10), base)  # +2 items: chance
    assert not small.improved and "not a significant gain" in small.reason
    worse = judge(_scores([0] * 30), base)
    assert not worse.improved
    # recall@1 up, but category top-1 collapsed: refused
    guarded = judge(_scores([1] * 30, [False] * 30), _scores([0] * 20 + [1] * 10, [True] * 30))
    assert not guarded.improved and "category@1 fell" in guarded.reason
    assert not judge(_scores([]), _scores([])).improved
    json.dumps(guarded.to_dict(), allow_nan=False)


def test_score_ranks_the_right_item_and_the_top_category() -> None:
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0], [0.1, 0.0, 0.9]], np.float32)
    asked = Queries(
        queries, [np.array([1]), np.array([2])], np.array([1, 2]), categories=["b", "b"]
    )
    s = score(gallery, asked, categories=["a", "b", "b"])
    assert s.rank.tolist() == [2.0, 1.0]
    assert s.category_hit.tolist() == [False, True]
    assert s.metric("MRR@10").tolist() == [0.5, 1.0]
    rng = np.random.default_rng(0)
    gal, qs = rng.normal(size=(50, 8)), rng.normal(size=(6, 8))
    truth = np.argsort(-(qs @ gal.T), axis=1)[:, 3]  # each query's 4th best
    ranked = score(gal, Queries(qs, truth, np.arange(6)), max_k=5)
    assert ranked.rank.tolist() == [4.0] * 6
    assert score(gal, Queries(qs, truth, np.arange(6)), max_k=3).rank.tolist() == [np.inf] * 6


def test_reports_have_no_nan() -> None:
    data = json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}})
    assert json.dumps(data, allow_nan=False) == '{"a": null, "b": [1.0, null], "c": {"d": 2}}'


# --- shopper views ---------------------------------------------------------------------------


def test_shopper_views_are_seeded_and_the_families_differ() -> None:
    pools = load_backgrounds()
    assert pools.train and pools.eval
    train_ids = {id(i) for i in pools.train}
    assert not train_ids & {id(i) for i in pools.eval}
    product = photo("coffee", 200)
    a = shopper_view(product, TRAIN, pools.train, random.Random("x"))
    b = shopper_view(product, TRAIN, pools.train, random.Random("x"))
    c = shopper_view(product, EVAL, pools.eval, random.Random("x"))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert max(a.size) == TRAIN.size and max(c.size) == EVAL.size
    assert a.mode == "RGB" and not np.array_equal(np.asarray(a.resize(c.size)), np.asarray(c))


def test_backdrop_mask_finds_a_product_on_white_and_none_in_a_scene() -> None:
    studio = Image.new("RGB", (100, 100), (250, 250, 250))
    studio.paste((200, 30, 30), (30, 30, 70, 70))
    mask = np.asarray(backdrop_mask(studio))
    assert mask[50, 50] > 200 and mask[5, 5] < 50
    assert backdrop_mask(photo("astronaut", 100)) is None


def test_background_folder_is_split_between_training_and_judging(tmp_path: Path) -> None:
    for n in range(12):
        photo(PHOTOS[n % 4], 64).save(tmp_path / f"bg{n}.jpg")
    pools = load_backgrounds(tmp_path)
    assert len(pools.train) + len(pools.eval) == 12 and pools.train and pools.eval
    with pytest.raises(ConfigError, match="does not exist"):
        load_backgrounds(tmp_path / "missing")


# --- objectives and refusals -----------------------------------------------------------------


def test_auto_objective_is_instance_without_product_groups() -> None:
    one = [CatalogItem(f"i{n}", "x.jpg", {"category": "c"}) for n in range(6)]
    grouped = [CatalogItem(f"i{n}", "x.jpg", {"product": f"p{n // 2}"}) for n in range(6)]
    assert choose_task(one, None) == "instance"
    assert choose_task(one, "id") == "instance"
    assert choose_task(one, "category") == "label"  # asked for explicitly
    assert choose_task(grouped, None) == "label"
    with pytest.raises(ConfigError, match="strategy partial"):
        FinetuneOptions(objective="instance", strategy="full")
    assert FinetuneOptions().resolved("instance").strategy == "partial"
    assert FinetuneOptions().resolved("label").strategy == "head"


def test_label_objective_refuses_labels_that_cannot_teach() -> None:
    items = [CatalogItem(f"i{n}", "x.jpg", {}) for n in range(30)]
    unique = LabelledCatalog(items, [f"L{n}" for n in range(30)], "title")
    pool, split = make_split(unique, holdout=0.2, val_fraction=0.2, seed=0)
    with pytest.raises(ConfigError, match="--objective instance"):
        check_answerable(unique, pool, split)


def test_cli_finetune_with_unique_labels_exits_2_before_training(
    tmp_path: Path, settings, monkeypatch, capsys
) -> None:
    manifest = product_shots(tmp_path / "cat", 12, 48)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    argv = ["finetune", str(manifest), "-o", str(tmp_path / "m"), "--label-column", "title"]
    assert main(argv) == 2
    assert "labels cannot teach" in capsys.readouterr().err
    assert not (tmp_path / "m" / "open_clip_config.json").exists()


@pytest.mark.slow  # seconds of indexing and searching; the quick loop keeps this file's other tests
def test_cli_eval_label_task_without_answers_exits_2(
    tmp_path: Path, settings, monkeypatch, capsys
) -> None:
    manifest = product_shots(tmp_path / "cat", 8, 48)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    argv = ["eval", str(manifest), "--task", "label", "--label-column", "title"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "--task instance" in capsys.readouterr().err


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("unfreeze", [0, 1, 2])
def test_split_tower_with_identity_head_is_the_base_model(
    embedder: Embedder, cache_dir: Path, unfreeze: int
) -> None:
    import copy

    import open_clip

    from training.finetune.model import base_model_cfg, build_model

    cfg = copy.deepcopy(base_model_cfg(embedder, cache_dir))
    cfg["vision_cfg"]["timm_proj"] = "linear"
    model = build_model(cfg, embedder, 0)
    identity_head(model.visual)
    tower = SplitTower(model.visual.eval(), unfreeze)
    pixels = torch.stack([embedder.preprocess(photo(n, 160)) for n in PHOTOS[:3]])
    with torch.inference_mode():
        mine = torch.nn.functional.normalize(tower(tower.bottom(pixels)), dim=-1).numpy()
    base = embedder.embed_tensors(pixels)
    assert np.min(np.sum(mine * base, axis=1)) > 0.9999
    assert isinstance(model, open_clip.CLIP)
    names = [g["name"] for g in tower.param_groups(1e-3, 0.1, 0.5)]
    assert names[0] == "head" and len(names) == (1 if unfreeze == 0 else 2 + unfreeze)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert not any(n.startswith("trunk.conv_stem") for n in trainable)
    assert any(n.startswith("trunk.blocks.6") for n in trainable) == (unfreeze > 0)


TINY = ["--views", "2", "--eval-views", "1", "--epochs", "2", "--holdout", "0.3"]


@pytest.mark.slow
def test_instance_finetune_exports_a_judged_model_and_eval_compares_it(
    tmp_path: Path, settings, monkeypatch, capsys
) -> None:
    manifest = product_shots(tmp_path / "cat", 40)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    out = tmp_path / "model"
    code = main(["-q", "finetune", str(manifest), "-o", str(out), *TINY, "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == (0 if report["improved"] else 1)
    assert report["objective"] == "instance" and report["strategy"] == "partial"
    assert report["items"]["held_out"] >= 8 and report["verdict"]["queries"] > 0
    assert set(report["held_out"]["before"]) >= {"R@1", "R@10", "category@1", "queries"}
    assert json.loads((out / "finetune_report.json").read_text(), parse_constant=_no_nan)
    block = read_verdict(out)
    assert block["objective"] == "instance" and block["improved"] == report["improved"]
    tuned = Embedder(f"local-dir:{out}", device="cpu", cache_dir=settings.model.cache_dir)
    assert tuned.info.dim == 1280 and not tuned.has_text
    argv = ["-q", "eval", str(manifest), "--model", "builtin:efficientnet-lite0", "--model",
            f"local-dir:{out}", "--views", "1", "--holdout", "0.3", "--json",
            "--out", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "instance" and len(ev["models"]) == 2
    assert ev["models"][0]["queries"] == ev["models"][1]["queries"] > 0
    assert ev["models"][1]["verdict_vs_first"] is not None
    # same seed and holdout: eval asks finetune's held-out questions, and its base figure is
    # finetune's (within one item: finetune embeds through float16 cached maps)
    assert ev["models"][0]["queries"] == report["held_out"]["before"]["queries"]
    assert ev["models"][0]["R@1"]["value"] == pytest.approx(
        report["held_out"]["before"]["R@1"]["value"], abs=1 / report["items"]["held_out"] + 1e-6
    )


@pytest.mark.slow
def test_a_destructive_learning_rate_is_not_improved_and_not_promotable(
    tmp_path: Path, settings, monkeypatch, capsys
) -> None:
    manifest = product_shots(tmp_path / "cat", 40)
    monkeypatch.setenv("VSEARCH_CACHE_DIR", settings.model.cache_dir)
    monkeypatch.setenv("VSEARCH_DEVICE", "cpu")
    out = tmp_path / "bad"
    argv = ["finetune", str(manifest), "-o", str(out), *TINY, "--lr", "5", "--distill", "0"]
    assert main(["-q", *argv, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["improved"] is False
    assert read_verdict(out)["improved"] is False
    from training.versions import finetune_verdict

    assert finetune_verdict(f"local-dir:{out}")["improved"] is False


def _no_nan(value: str) -> float:
    raise AssertionError(f"{value} in a JSON report")


def test_batches_group_look_alikes_and_cover_every_item_once() -> None:
    from training.finetune.batches import nearest, neighbourhood_batches

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8))
    vectors = np.repeat(centres, 4, axis=0) + 0.01 * rng.normal(size=(20, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    near = nearest(vectors, k=3, chunk=7)
    assert near.shape == (20, 3)
    assert all(set(near[i] // 4) == {i // 4} for i in range(20))  # its own cluster first
    items = np.arange(100, 120)  # positions into a bigger catalog
    batches = neighbourhood_batches(items, near, 8, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == items.tolist()
    groups = [set((b[i : i + 4] - 100) // 4) for b in batches for i in range(0, len(b), 4)]
    assert sum(len(g) == 1 for g in groups) >= 4  # look-alikes travel together


def test_zoomed_training_views_frame_the_product_closer() -> None:
    """A zoomed view (as one of the query's crops sees it) shows the product larger, at the
    same output size, and still reproducibly."""
    product = Image.new("RGB", (120, 120), (250, 250, 250))
    product.paste((220, 20, 20), (20, 20, 100, 100))
    far = dataclasses.replace(TRAIN, zoom_p=0.0, occlude_p=0.0, background_p=0.0)
    near = dataclasses.replace(far, zoom_p=1.0)

    def red_share(family: ViewFamily, seed: int) -> float:
        a = np.asarray(shopper_view(product, family, [], random.Random(seed)), np.int16)
        assert max(a.shape[:2]) == family.size
        return float(np.mean((a[..., 0] > 120) & (a[..., 1] < 90) & (a[..., 2] < 90)))

    whole = np.mean([red_share(far, s) for s in range(12)])
    closer = np.mean([red_share(near, s) for s in range(12)])
    assert closer > 1.15 * whole > 0
    a = shopper_view(product, near, [], random.Random("z"))
    assert np.array_equal(
        np.asarray(a), np.asarray(shopper_view(product, near, [], random.Random("z")))
    )


def test_koleo_pushes_the_nearest_other_item_away_and_ignores_own_views() -> None:
    labels = torch.tensor([0, 0, 1, 2])
    close = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, 0.1], [0.0, 1.0]]), dim=-1)
    apart = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    assert koleo_loss(close, labels) > koleo_loss(apart, labels)
    # an item's own views (same label) never count as its nearest neighbour
    same = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    assert torch.isfinite(koleo_loss(same, labels))
    assert koleo_loss(same, torch.zeros(4, dtype=torch.long)).item() == 0.0


def test_refit_stops_where_the_chosen_epoch_stood_on_the_full_schedule() -> None:
    """A refit for 37 of 64 epochs decays its rate over 64 epochs (as the selection run did)
    and trains every usable item for exactly 37 epochs."""
    from types import SimpleNamespace

    from training.finetune.instance import InstanceHistory, _refit

    class FakeTrainer:
        opts = SimpleNamespace(epochs=64, batch_size=4)

        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []

        def reset(self) -> None:
            self.calls.append(("reset", None))

        def steps_per_epoch(self, items: np.ndarray) -> int:
            return len(items) // self.opts.batch_size

        def optimizer(self, steps: int) -> tuple[None, None]:
            self.calls.append(("optimizer", steps))
            return None, None

        def epoch(self, items, opt, sched, epoch, progress) -> float:
            self.calls.append(("epoch", (len(items), epoch)))
            return 0.0

    ok = np.ones(12, bool)
    ok[3] = False  # a photo that failed: never trained on
    data = SimpleNamespace(clean=SimpleNamespace(ok=ok), train_views=SimpleNamespace(ok=ok))
    trainer, history = FakeTrainer(), InstanceHistory()
    _refit(trainer, data, 37, history, None)  # type: ignore[arg-type]
    assert trainer.calls[:2] == [("reset", None), ("optimizer", (11 // 4) * 64)]
    epochs = [c[1] for c in trainer.calls if c[0] == "epoch"]
    assert epochs == [(11, e) for e in range(1, 38)]
    assert history.refit_epochs == 37
