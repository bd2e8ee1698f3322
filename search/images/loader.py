"""The DataLoader factory: decode workers for every job that runs a model in PyTorch.

Indexing, evaluation and fine-tuning build their loaders here. A worker reads each image
once (:class:`.decoder.Decoder`: the job's reader, content hash, limits, JPEG reduced-size
decode), optionally augments it (fine-tuning), and runs the per-image part of the model's
transform (:class:`.batch.BatchPreprocess`); :func:`model_input` finishes the batch on the
model's device. A bad image becomes a reason in :attr:`Batch.failed`, never an exception.
With ``raw_jpeg`` the workers only read and check plain JPEGs and the device decodes them
(nvJPEG on CUDA).
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageError
from .batch import BatchPreprocess, decode_jpegs, resize_crop
from .decode import BYTES_PER_PIXEL, DEFAULT_MAX_BYTES, sniff_format
from .decoder import Decoder, failure_reason
from .workers import die_with_parent

Augment = Callable[[Image.Image], Image.Image]


class Sample(NamedTuple):
    """One decoded (or failed) image, as a worker returns it."""

    position: int  # into the job list
    pixels: torch.Tensor | None  # preprocessed; raw JPEG bytes when ``raw``; None: failed
    content_hash: str
    error: str  # why it failed ("" when it did not)
    raw: bool = False  # plain JPEG bytes, to be decoded on the device


@dataclass
class Batch:
    """A batch of positions into the job list: decoded tensors, and the failures."""

    index: list[int]  # positions of the decoded images, in tensor order
    pixels: torch.Tensor | None
    hashes: list[str]
    failed: list[tuple[int, str]]
    raw: list[tuple[int, torch.Tensor, str]] = field(default_factory=list)  # JPEG bytes

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``, CUDA only)."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def batch_preprocess(
    preprocess: BatchPreprocess | Callable[[Any], torch.Tensor],
) -> BatchPreprocess:
    """``preprocess`` as a :class:`BatchPreprocess`; a plain transform runs whole per image."""
    if isinstance(preprocess, BatchPreprocess):
        return preprocess
    return BatchPreprocess(preprocess, batched=False)


class ImageDataset(Dataset):
    """Reads, hashes, safely decodes, augments (when asked) and preprocesses one image per item."""

    def __init__(
        self,
        refs: Sequence[str],
        preprocess: BatchPreprocess | Callable[[Any], torch.Tensor],
        decoder: Decoder,
        *,
        augment: Augment | None = None,
        raw_jpeg: bool = False,
    ) -> None:
        self.refs = list(refs)
        self.prep = batch_preprocess(preprocess)
        self.decoder = decoder
        self.augment = augment
        self.raw_jpeg = raw_jpeg and augment is None

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Sample:
        try:
            data, chash = self.decoder.load(self.refs[i])
            if self.raw_jpeg and _plain_jpeg(data, self.decoder.max_pixels):
                return Sample(
                    i, torch.frombuffer(bytearray(data), dtype=torch.uint8), chash, "", True
                )
            img = self.decoder.decode(data)
            if self.augment is not None:
                img = self.augment(img)
            return Sample(i, self.prep.per_image(img), chash, "")
        except Exception as exc:  # never let one file kill a worker
            return Sample(i, None, "", failure_reason(exc))


def _plain_jpeg(data: bytes, max_pixels: int) -> bool:
    """A baseline RGB/grey JPEG within the pixel limit and the decode budget (header only;
    nothing decoded). Anything else takes the CPU path (reduced-scale decode, checks)."""
    if sniff_format(data[:16]) != "JPEG":
        return False
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as probe:
            w, h = probe.size
            fits = 0 < w * h <= max_pixels and w * h * BYTES_PER_PIXEL <= DEFAULT_MAX_BYTES
            return probe.format == "JPEG" and probe.mode in ("RGB", "L") and fits
    except Exception:
        return False


def collate(samples: list[Sample]) -> Batch:
    ok = [s for s in samples if s.pixels is not None and not s.raw]
    raw = [
        (s.position, s.pixels, s.content_hash) for s in samples if s.pixels is not None and s.raw
    ]
    failed = [(s.position, s.error) for s in samples if s.pixels is None]
    pixels = torch.stack([s.pixels for s in ok]) if ok else None
    return Batch([s.position for s in ok], pixels, [s.content_hash for s in ok], failed, raw)


def model_input(
    batch: Batch, prep: BatchPreprocess, device: str, decoder: Decoder
) -> tuple[list[int], list[str], torch.Tensor | None]:
    """Finish a batch on ``device``: (positions, content hashes, model-ready tensor).

    Raw JPEGs are decoded on the device; one the device cannot decode goes through the CPU
    path (``decoder``: it either decodes it or records why it is broken in ``batch.failed``).
    """
    index, hashes = list(batch.index), list(batch.hashes)
    parts = [prep.finish(batch.pixels, device)] if batch.pixels is not None else []
    if batch.raw:
        size = prep.size or 224
        decoded = decode_jpegs([blob for _, blob, _ in batch.raw], device)
        on_device = []
        for (pos, blob, chash), img in zip(batch.raw, decoded, strict=True):
            try:
                if img is None:
                    tensor = prep.per_image(decoder.decode(blob.numpy().tobytes())).unsqueeze(0)
                    on_device.append(prep.finish(tensor, device))
                else:
                    on_device.append(prep.finish(resize_crop(img, size).unsqueeze(0), device))
            except ImageError as exc:
                batch.failed.append((pos, str(exc)))
                continue
            index.append(pos)
            hashes.append(chash)
        parts.extend(on_device)
    if not parts:
        return [], [], None
    return index, hashes, parts[0] if len(parts) == 1 else torch.cat(parts)


def _worker_init(parent: int, _: int) -> None:
    die_with_parent(parent)  # first: nothing below may keep an orphan alive
    torch.set_num_threads(1)  # workers decode; leave the cores' BLAS threads to the model


def make_loader(
    dataset: Dataset, batches: int | Sequence[Sequence[int]], *, workers: int, pin_memory: bool
) -> DataLoader:
    """A DataLoader of :class:`Batch` es that keeps a bounded number of them decoded ahead.

    batches: a batch size (the items in order), or the batches themselves (positions into
        ``dataset``; fine-tuning's label-balanced epochs, evaluation's views of an item).
    """
    kwargs: dict[str, Any] = {}
    if workers > 0:
        # Plain fork (Linux default): forkserver/spawn would re-import __main__, which breaks
        # callers running from a notebook or stdin. Workers never touch gRPC.
        kwargs.update(
            worker_init_fn=functools.partial(_worker_init, os.getpid()),
            prefetch_factor=2,
            persistent_workers=False,
        )
    if isinstance(batches, int):
        kwargs.update(batch_size=batches, shuffle=False)
    else:
        kwargs.update(batch_sampler=[list(b) for b in batches])
    return DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kwargs,
    )
