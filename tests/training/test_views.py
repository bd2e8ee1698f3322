"""Shopper-style views: each catalog photo read once, views the same in every run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import indexer.decoding as decoding_module
from indexer.tuning import Tuning
from tests.helpers import photo
from training.evaluation.features import Feed
from training.evaluation.views import Job, ViewJob, cache_views, item_batches


def test_an_items_views_never_straddle_two_batches() -> None:
    jobs = [Job(item, kind, n) for item, v in ((0, 3), (1, 1), (2, 4)) for kind, n in
            [("eval", k) for k in range(v)]]  # fmt: skip
    batches = item_batches(jobs, 4)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert item_batches(jobs, 2) == [[0, 1, 2], [3], [4, 5, 6, 7]]  # too many views: alone
    assert sorted(p for b in batches for p in b) == list(range(len(jobs)))


def test_views_read_each_photo_once_and_repeat_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from open_clip.transform import image_transform

    refs = []
    for name in ("chelsea", "coffee", "rocket"):
        refs.append(str(tmp_path / f"{name}.jpg"))
        photo(name, 200).save(refs[-1], "JPEG", quality=90)
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    refs.append(str(tmp_path / "broken.jpg"))
    reads: list[str] = []
    real = decoding_module.read_image_bytes
    monkeypatch.setattr(
        decoding_module, "read_image_bytes", lambda r, *a, **k: reads.append(r) or real(r)
    )
    ids = ["c", "k", "r", "b"]
    plan = {"clean": (range(4), 1), "eval": ([0, 1, 2, 3], 3)}
    job = ViewJob(refs, ids, plan, backgrounds={"eval": []}, seed=7, dtype=torch.float32)
    transform = image_transform(32, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    feed = Feed(transform, 32, "cpu")
    tuning = Tuning(batch_size=3, workers=0, threads=0)

    def bottom(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(2, 3))

    sets, failed = cache_views(job, bottom, feed, tuning)
    assert sorted(reads) == sorted(refs)  # once per photo, the broken one included
    assert failed == [("b", "not an image (unrecognised format)")]
    assert sets["clean"].ok.tolist() == [True, True, True, False]
    assert sets["eval"].maps.shape == (4, 3, 3)
    assert not torch.equal(sets["eval"].maps[0, 0], sets["eval"].maps[0, 1])  # distinct views
    again, _ = cache_views(job, bottom, feed, tuning)
    assert torch.equal(again["eval"].maps, sets["eval"].maps)  # seeded: the same views
