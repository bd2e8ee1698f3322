"""Batched preprocessing: the per-image part runs in decode workers, the rest on the batch.

open_clip's image transform is ``Resize -> CenterCrop -> convert mode -> ToTensor ->
Normalize``. :class:`BatchPreprocess` splits it after the crop: workers return the cropped
picture as a uint8 tensor (a quarter of the bytes of float32 to pass between processes and,
on CUDA, to copy to the device), and the conversion to float and the normalisation run once
per batch on the model's device. The arithmetic is the same as the model's own transform, so
the pixels match it exactly. Any other transform falls back to running whole per image.

:func:`decode_jpegs` is the optional device-side JPEG path (``torchvision.io.decode_jpeg``,
nvJPEG on CUDA): workers only read bytes, the device decodes, resizes and normalises.
Its resize is torch's antialiased bicubic, within a few grey levels of PIL's, so it is an
opt-in (``Tuning.device_decode``), measured in benchmarks/bench_indexing.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Transform = Callable[[Any], torch.Tensor]


class BatchPreprocess:
    """``per_image`` (PIL -> uint8 or float tensor) plus ``finish`` (batch -> model input)."""

    def __init__(self, preprocess: Transform, *, batched: bool = True) -> None:
        self.full = preprocess
        self.size: int | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.head: list[Any] = []
        steps = list(getattr(preprocess, "transforms", []))
        names = [type(t).__name__ for t in steps]
        if batched and names[-2:] in (["ToTensor", "Normalize"], ["MaybeToTensor", "Normalize"]):
            self.head = steps[:-2]
            norm = steps[-1]
            self.mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
            self.size = _crop_size(steps)

    @property
    def batched(self) -> bool:
        return self.mean is not None

    def per_image(self, img: Any) -> torch.Tensor:
        if not self.batched:
            return self.full(img)
        for step in self.head:
            img = step(img)
        arr = np.array(img, dtype=np.uint8)  # a writable copy torch can own
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def finish(self, pixels: torch.Tensor, device: str) -> torch.Tensor:
        """Move a stacked batch to ``device`` and finish preprocessing it there."""
        cuda = device.startswith("cuda")
        pixels = pixels.to(device, non_blocking=cuda)
        if pixels.dtype != torch.uint8 or self.mean is None or self.std is None:
            return pixels
        # Same operations, in the same order, as ToTensor (x / 255) then Normalize.
        out = pixels.to(torch.float32).div_(255)
        return out.sub_(self.mean.to(device)).div_(self.std.to(device))


def _crop_size(steps: Sequence[Any]) -> int | None:
    for step in steps:
        if type(step).__name__ == "CenterCrop":
            size = step.size
            return int(size[0] if isinstance(size, tuple | list) else size)
    return None


def decode_jpegs(blobs: Sequence[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors on ``device`` to RGB uint8 (C, H, W); None where one fails."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB
    try:
        return list(decode_jpeg(list(blobs), mode=mode, device=device, apply_exif_orientation=True))
    except (RuntimeError, ValueError):  # one bad file fails the batch: retry one by one
        out: list[torch.Tensor | None] = []
        for blob in blobs:
            try:
                out.append(decode_jpeg(blob, mode=mode, device=device, apply_exif_orientation=True))
            except (RuntimeError, ValueError):
                out.append(None)
        return out


def resize_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` (antialiased bicubic) and centre-crop a square."""
    from torchvision.transforms.v2 import functional as F

    img = F.resize(img, [size], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(img, [size, size])
