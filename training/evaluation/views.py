"""Decode every catalog photo once, make its shopper-style views, cache their bottom maps.

A job is (item, kind, view number): kind ``clean`` is the catalog photo itself (what the
index stores), ``train`` a training view, ``eval`` a judging view. Views are made in the
decode workers of :mod:`search.images.loader`, each from a seed of (run seed, kind, item id,
number), so a view is the same in every run and for every model compared on it. The jobs of
one item always share a batch, hence a worker: each photo is read and decoded once. The
frozen bottom of the tower turns each view into a map kept in memory as float16.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from indexer.decoding import catalog_decoder
from indexer.tuning import Tuning
from search.errors import ImageError
from search.images import DEFAULT_MAX_PIXELS, Decoder
from search.images.batch import BatchPreprocess
from search.images.decoder import failure_reason
from search.images.loader import Sample, make_loader, model_input

from .features import Feed
from .shopper import EVAL, TRAIN, ViewFamily, shopper_view

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
FAMILIES: dict[str, ViewFamily | None] = {"clean": None, "train": TRAIN, "eval": EVAL}


@dataclass(frozen=True)
class Job:
    item: int
    kind: str
    n: int


@dataclass(frozen=True)
class ViewJob:
    """What :func:`cache_views` makes: views of which photos, how many, on which backgrounds.

    plan: ``plan[kind] = (items, views per item)``; backgrounds: the pool of each view kind;
    dtype: what the maps are kept as.
    """

    refs: Sequence[str]
    ids: Sequence[str]
    plan: dict[str, tuple[Sequence[int], int]]
    backgrounds: dict[str, list[Image.Image]] = field(default_factory=dict)
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_private: bool = False  # URLs may reach loopback/private hosts
    dtype: torch.dtype = torch.float16

    def jobs(self) -> list[Job]:
        """Every view to make, the jobs of an item next to each other."""
        jobs = [
            Job(i, kind, n)
            for kind, (items, v) in self.plan.items()
            for i in items
            for n in range(v)
        ]
        return sorted(jobs, key=lambda j: (j.item, j.kind, j.n))


@dataclass
class ViewSet:
    """Maps of one kind: ``maps[item, n]`` (float16), ``ok[item]``."""

    maps: torch.Tensor
    ok: np.ndarray

    @property
    def per_item(self) -> int:
        return int(self.maps.shape[1])


class _Views(Dataset):
    """One :class:`Sample` per job: the view, preprocessed; its photo decoded once."""

    def __init__(
        self, job: ViewJob, jobs: Sequence[Job], prep: BatchPreprocess, decoder: Decoder
    ) -> None:
        self.job, self.jobs, self.prep, self.decoder = job, list(jobs), prep, decoder
        self._last: tuple[int, Image.Image | ImageError] | None = None  # a failure too

    def __len__(self) -> int:
        return len(self.jobs)

    def _photo(self, item: int) -> Image.Image:
        if self._last is None or self._last[0] != item:
            try:
                img: Image.Image | ImageError = self.decoder(self.job.refs[item])
            except ImageError as exc:  # every view of a broken photo fails without a re-read
                img = exc
            if isinstance(img, Image.Image):
                draft = self.decoder.draft_size or max(img.size)
                if max(img.size) > 2 * draft:
                    img.thumbnail((2 * draft, 2 * draft), Image.BICUBIC)
            self._last = (item, img)
        found = self._last[1]
        if isinstance(found, ImageError):
            raise found
        return found

    def __getitem__(self, i: int) -> Sample:
        job = self.jobs[i]
        try:
            photo = self._photo(job.item)
            family = FAMILIES[job.kind]
            if family is not None:
                seed = f"{self.job.seed}:{job.kind}:{self.job.ids[job.item]}:{job.n}"
                backgrounds = self.job.backgrounds[job.kind]
                photo = shopper_view(photo, family, backgrounds, random.Random(seed))
            return Sample(i, self.prep.per_image(photo), "", "")
        except Exception as exc:  # one bad file never kills a worker
            return Sample(i, None, "", failure_reason(exc))


def item_batches(jobs: Sequence[Job], batch_size: int) -> list[list[int]]:
    """Positions of ``jobs`` in batches of about ``batch_size``, an item's jobs never split
    (one worker reads its photo); an item with more views than that is a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    for _, group in groupby(range(len(jobs)), key=lambda p: jobs[p].item):
        views = list(group)
        if current and len(current) + len(views) > batch_size:
            batches.append(current)
            current = []
        current += views
    if current:
        batches.append(current)
    return batches


def cache_views(
    job: ViewJob,
    bottom: Callable[[torch.Tensor], torch.Tensor],
    feed: Feed,
    tuning: Tuning,
    progress: Progress | None = None,
) -> tuple[dict[str, ViewSet], list[tuple[str, str]]]:
    """A :class:`ViewSet` per kind of ``job.plan``.

    ``bottom`` turns a batch of preprocessed pixels into what is kept per view (a frozen
    tower bottom's maps, or a whole model's embeddings), stored as ``job.dtype``;
    ``tuning`` gives the batch size and the decode workers.

    Returns the view sets and (item id, reason) of every photo that could not be read.
    """
    jobs = job.jobs()
    prep = BatchPreprocess(feed.preprocess)
    decoder = catalog_decoder(job.max_pixels, feed.image_size, allow_private=job.allow_private)
    batches = item_batches(jobs, tuning.batch_size)
    loader = make_loader(
        _Views(job, jobs, prep, decoder),
        batches,
        workers=min(tuning.workers, len(batches)),
        pin_memory=feed.device.startswith("cuda"),
    )
    n, dtype = len(job.refs), job.dtype
    sets: dict[str, ViewSet] = {}
    failed: dict[int, str] = {}
    done = 0
    with torch.inference_mode():
        for batch in loader:
            index, _, pixels = model_input(batch, prep, feed.device, decoder)
            for p, reason in batch.failed:
                failed.setdefault(jobs[p].item, reason)
            if pixels is not None:
                maps = bottom(pixels).to("cpu", dtype)
                for p, m in zip(index, maps, strict=True):
                    view = jobs[p]
                    vs = sets.get(view.kind)
                    if vs is None:
                        vs = sets[view.kind] = _empty(n, job.plan[view.kind][1], m, dtype)
                    vs.maps[view.item, view.n] = m
                    vs.ok[view.item] = True
            done += len(index) + len(batch.failed)
            if progress:
                progress(done, len(jobs))
    for kind, (_, v) in job.plan.items():
        if kind not in sets:
            sets[kind] = ViewSet(torch.zeros((n, v, 1), dtype=dtype), np.zeros(n, bool))
    for vs in sets.values():
        vs.ok[list(failed)] = False
    reasons = [(job.ids[i], r) for i, r in sorted(failed.items())]
    return sets, reasons


def _empty(n: int, per_item: int, like: torch.Tensor, dtype: torch.dtype) -> ViewSet:
    maps = torch.zeros((n, per_item, *like.shape), dtype=dtype)
    return ViewSet(maps, np.zeros(n, bool))


def view_budget(n_items: int, map_numel: int, views: int, budget_mb: int) -> int:
    """How many training views per item fit ``budget_mb`` of float16 maps (at least 2)."""
    per_view = map_numel * 2
    fit = int(budget_mb * 2**20 // max(1, per_view * max(1, n_items))) - 2  # clean + eval
    return max(2, min(views, fit))
