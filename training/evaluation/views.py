"""Decode every catalog photo once, make its shopper-style views, cache their bottom maps.

A job is (item, kind, view number): kind ``clean`` is the catalog photo itself (what the
index stores), ``train`` a training view, ``eval`` a judging view. Views are made in the
DataLoader's worker processes, each from a seed of (run seed, kind, item id, number), so a
view is the same in every run and for every model compared on it. The frozen bottom of
the tower turns each into a map kept in memory as float16.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from indexer.fetch import read_image_bytes
from search.errors import ImageError
from search.images import open_image

from .features import keep_list
from .shopper import EVAL, TRAIN, ViewFamily, shopper_view

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
FAMILIES: dict[str, ViewFamily | None] = {"clean": None, "train": TRAIN, "eval": EVAL}


@dataclass(frozen=True)
class Job:
    item: int
    kind: str
    n: int


@dataclass
class ViewSet:
    """Maps of one kind: ``maps[item, n]`` (float16), ``ok[item]``."""

    maps: torch.Tensor
    ok: np.ndarray

    @property
    def per_item(self) -> int:
        return int(self.maps.shape[1])


class _Views:
    """Dataset of (job number, tensor or None, reason) for a list of jobs."""

    def __init__(
        self,
        refs: Sequence[str],
        ids: Sequence[str],
        jobs: Sequence[Job],
        backgrounds: dict[str, list[Image.Image]],
        preprocess: Any,
        draft: int,
        seed: int,
    ) -> None:
        self.refs, self.ids, self.jobs = list(refs), list(ids), list(jobs)
        self.backgrounds, self.preprocess = backgrounds, preprocess
        self.draft, self.seed = draft, seed
        self._last: tuple[int, Image.Image] | None = None

    def __len__(self) -> int:
        return len(self.jobs)

    def _photo(self, item: int) -> Image.Image:
        if self._last is None or self._last[0] != item:
            img = open_image(read_image_bytes(self.refs[item]), draft_size=self.draft)
            if max(img.size) > 2 * self.draft:
                img.thumbnail((2 * self.draft, 2 * self.draft), Image.BICUBIC)
            self._last = (item, img)
        return self._last[1]

    def __getitem__(self, i: int) -> tuple[int, Any, str]:
        job = self.jobs[i]
        try:
            photo = self._photo(job.item)
            family = FAMILIES[job.kind]
            if family is not None:
                rng = random.Random(f"{self.seed}:{job.kind}:{self.ids[job.item]}:{job.n}")
                photo = shopper_view(photo, family, self.backgrounds[job.kind], rng)
            return i, self.preprocess(photo), ""
        except ImageError as exc:
            return i, None, str(exc)
        except Exception as exc:  # one bad file never kills a worker
            return i, None, f"unexpected error: {exc.__class__.__name__}: {exc}"


def cache_views(
    refs: Sequence[str],
    ids: Sequence[str],
    plan: dict[str, tuple[Sequence[int], int]],
    bottom: Callable[[torch.Tensor], torch.Tensor],
    *,
    backgrounds: dict[str, list[Image.Image]],
    preprocess: Any,
    image_size: int,
    device: str,
    batch_size: int,
    workers: int,
    seed: int,
    progress: Progress | None = None,
    dtype: torch.dtype = torch.float16,
) -> tuple[dict[str, ViewSet], list[tuple[str, str]]]:
    """``plan[kind] = (items, views per item)`` -> a :class:`ViewSet` per kind.

    ``bottom`` turns a batch of preprocessed pixels into what is kept per view (a frozen
    tower bottom's maps, or a whole model's embeddings), stored as ``dtype``.

    Returns the view sets and (item id, reason) of every photo that could not be read.
    """
    from torch.utils.data import DataLoader

    jobs = [Job(i, kind, n) for kind, (items, v) in plan.items() for i in items for n in range(v)]
    jobs.sort(key=lambda j: (j.item, j.kind, j.n))  # consecutive jobs share a decoded photo
    dataset = _Views(refs, ids, jobs, backgrounds, preprocess, image_size, seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=min(workers, max(1, len(jobs) // batch_size)),
        collate_fn=keep_list,
    )
    sets: dict[str, ViewSet] = {}
    failed: dict[int, str] = {}
    done = 0
    with torch.inference_mode():
        for batch in loader:
            good = [(p, t) for p, t, _ in batch if t is not None]
            for p, _, reason in batch:
                if reason:
                    failed.setdefault(jobs[p].item, reason)
            if good:
                pixels = torch.stack([t for _, t in good]).to(device, non_blocking=True)
                maps = bottom(pixels).to("cpu", dtype)
                for (p, _), m in zip(good, maps, strict=True):
                    job = jobs[p]
                    vs = sets.get(job.kind)
                    if vs is None:
                        vs = sets[job.kind] = _empty(len(refs), plan[job.kind][1], m, dtype)
                    vs.maps[job.item, job.n] = m
                    vs.ok[job.item] = True
            done += len(batch)
            if progress:
                progress(done, len(jobs))
    for kind, (_, v) in plan.items():
        if kind not in sets:
            sets[kind] = ViewSet(
                torch.zeros((len(refs), v, 1), dtype=dtype), np.zeros(len(refs), bool)
            )
    for vs in sets.values():
        vs.ok[list(failed)] = False
    reasons = [(ids[i], r) for i, r in sorted(failed.items())]
    return sets, reasons


def _empty(n: int, per_item: int, like: torch.Tensor, dtype: torch.dtype) -> ViewSet:
    maps = torch.zeros((n, per_item, *like.shape), dtype=dtype)
    return ViewSet(maps, np.zeros(n, bool))


def view_budget(n_items: int, map_numel: int, views: int, budget_mb: int) -> int:
    """How many training views per item fit ``budget_mb`` of float16 maps (at least 2)."""
    per_view = map_numel * 2
    fit = int(budget_mb * 2**20 // max(1, per_view * max(1, n_items))) - 2  # clean + eval
    return max(2, min(views, fit))
