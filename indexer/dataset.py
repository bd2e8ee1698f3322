"""Decode-and-preprocess stage of the pipeline, run in DataLoader worker processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from search.errors import ImageError
from search.images import open_image

from .fetch import read_image_bytes
from .hashing import content_hash


@dataclass
class Batch:
    """A batch of positions into the job list: decoded tensors, and the failures."""

    index: list[int]  # positions of the decoded images, in tensor order
    pixels: torch.Tensor | None
    hashes: list[str]
    failed: list[tuple[int, str]]


class ImageDataset(Dataset):
    """Reads, hashes, safely decodes (with JPEG draft) and preprocesses one image per item."""

    def __init__(
        self,
        refs: Sequence[str],
        preprocess: Callable[[Any], torch.Tensor],
        *,
        draft_size: int,
        max_pixels: int,
    ) -> None:
        self.refs = list(refs)
        self.preprocess = preprocess
        self.draft_size = draft_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str, str]:
        try:
            data = read_image_bytes(self.refs[i])
            img = open_image(data, max_pixels=self.max_pixels, draft_size=self.draft_size)
            return i, self.preprocess(img), content_hash(data), ""
        except ImageError as exc:
            return i, None, "", str(exc)
        except Exception as exc:  # never let one file kill a worker
            return i, None, "", f"unexpected error: {exc.__class__.__name__}: {exc}"


def collate(samples: list[tuple[int, torch.Tensor | None, str, str]]) -> Batch:
    ok = [(i, t, h) for i, t, h, err in samples if t is not None]
    failed = [(i, err) for i, t, _, err in samples if t is None]
    pixels = torch.stack([t for _, t, _ in ok]) if ok else None
    return Batch([i for i, _, _ in ok], pixels, [h for _, _, h in ok], failed)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; leave the cores' BLAS threads to the model


def make_loader(
    dataset: ImageDataset, *, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """A DataLoader that keeps a bounded number of decoded batches ahead of the model."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        # Plain fork (Linux default): forkserver/spawn would re-import __main__, which breaks
        # callers running from a notebook or stdin. Workers never touch gRPC.
        kwargs.update(worker_init_fn=_worker_init, prefetch_factor=2, persistent_workers=False)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kwargs,
    )
