"""Batched preprocessing: the per-image part runs in decode workers, the rest on the batch.

open_clip's image transform is ``Resize -> CenterCrop -> convert mode -> ToTensor ->
Normalize``. :class:`BatchPreprocess` splits it after the crop: workers return the cropped
picture as a uint8 tensor (a quarter of the bytes of float32 to pass between processes and,
on CUDA, to copy to the device), and the conversion to float and the normalisation run once
per batch on the model's device. The arithmetic is the same as the model's own transform, so
the pixels match it exactly. Any other transform falls back to running whole per image.

With ``fast_resize`` the resize and crop run in torch on the uint8 picture instead of PIL:
torch's antialiased bicubic is vectorised (~1 ms vs PIL's ~3 ms for a 450 px picture on the
benchmark CPU) and lands within 2 grey levels of PIL, nearly every pixel equal (mean
difference 0.005 levels on the benchmark workload), so the vectors match the exact path to
a cosine above 0.9999 (tested).

:func:`decode_jpegs` is the optional device-side JPEG path (``torchvision.io.decode_jpeg``,
nvJPEG on CUDA): workers only read bytes, the device decodes, resizes and normalises.
Its resize is torch's antialiased bicubic, within a few grey levels of PIL's, so it is an
opt-in (the indexer's ``Tuning.device_decode``), measured in benchmarks/bench_indexing.py.

:func:`for_embedder` picks the transform a job uses: an embedder on an exported runtime
(OpenVINO, ONNX Runtime) gets the torch-free transform its photo queries use
(:class:`.preprocess.Preprocess`, split the same way), so its index and its queries see the
same pixels and the job never imports open_clip or torchvision (~1.8 s of a ``vsearch
index`` start here, 1.1 s of it torchvision importing torch._dynamo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .preprocess import Preprocess

if TYPE_CHECKING:  # search.embedder imports this package
    from ..embedder import Embedder

Transform = Callable[[Any], torch.Tensor]


class PixelTransform:
    """A :class:`.preprocess.Preprocess` as a PIL -> float tensor transform (picklable)."""

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre

    def __call__(self, img: Any) -> torch.Tensor:
        return torch.from_numpy(self.pre(img))


class BatchPreprocess:
    """``per_image`` (PIL -> uint8 or float tensor) plus ``finish`` (batch -> model input)."""

    def __init__(
        self, preprocess: Transform, *, batched: bool = True, fast_resize: bool = False
    ) -> None:
        self.full = preprocess
        self.size: int | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.head: list[Any] = []
        self.torch_resize: tuple[int, int] | None = None  # (short side, crop) when fast
        self.plain: Preprocess | None = None  # the torch-free transform, when it is the one
        if batched and isinstance(preprocess, PixelTransform):
            pre = self.plain = preprocess.pre
            self.size = pre.size
            self.mean, self.std = _per_channel(pre.mean), _per_channel(pre.std)
            return
        steps = list(getattr(preprocess, "transforms", []))
        names = [type(t).__name__ for t in steps]
        if batched and names[-2:] in (["ToTensor", "Normalize"], ["MaybeToTensor", "Normalize"]):
            self.head = steps[:-2]
            norm = steps[-1]
            self.mean, self.std = _per_channel(norm.mean), _per_channel(norm.std)
            self.size = _crop_size(steps)
            if fast_resize:
                self.torch_resize = _resize_crop_plan(self.head)

    @property
    def batched(self) -> bool:
        return self.mean is not None

    def per_image(self, img: Any) -> torch.Tensor:
        if not self.batched:
            return self.full(img)
        if self.plain is not None:
            # PIL's array is read-only: a copy torch can own
            arr = np.array(self.plain.pixels(img))
            return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        if self.torch_resize is not None:
            short, crop = self.torch_resize
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            hwc = torch.from_numpy(np.array(rgb, dtype=np.uint8))
            return resize_crop(hwc.permute(2, 0, 1), short, crop).contiguous()
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


def for_embedder(
    embedder: Embedder, *, batched: bool = True, fast_resize: bool = False
) -> BatchPreprocess:
    """How a job preprocesses photos for ``embedder``: the torch-free transform of its exported runtime when it has one, else open_clip's
    (``fast_resize``, torch's resize instead of PIL's, applies to open_clip's only)."""
    pre = embedder.runtime_preprocess
    if pre is not None:
        return BatchPreprocess(PixelTransform(pre), batched=batched)
    return BatchPreprocess(embedder.preprocess, batched=batched, fast_resize=fast_resize)


def _per_channel(values: Sequence[float]) -> torch.Tensor:
    """Normalisation constants shaped to broadcast over an (N, C, H, W) batch."""
    return torch.as_tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


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


def resize_crop(img: torch.Tensor, size: int, crop: int | None = None) -> torch.Tensor:
    """Resize the short side to ``size`` (antialiased bicubic), centre-crop a square."""
    from torchvision.transforms.v2 import functional as F

    crop = crop or size
    img = F.resize(img, [size], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(img, [crop, crop])


def _resize_crop_plan(head: Sequence[Any]) -> tuple[int, int] | None:
    """(short side, crop) when ``head`` is Resize(short side, bicubic) -> CenterCrop -> RGB.

    Anything else (a fixed output shape, another filter, a max size, extra steps) keeps
    running in PIL exactly as the model's transform says.
    """
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    if len(head) < 2 or not isinstance(head[0], Resize) or not isinstance(head[1], CenterCrop):
        return None
    resize, rest = head[0], head[2:]
    size = resize.size
    if isinstance(size, list | tuple):
        if len(size) != 1:
            return None
        size = size[0]
    if (
        resize.interpolation != InterpolationMode.BICUBIC
        or resize.max_size is not None
        or resize.antialias is False
        or any(getattr(t, "__name__", type(t).__name__) not in _RGB_STEPS for t in rest)
    ):
        return None
    return int(size), int(_crop_size(head) or size)


# open_clip ends its PIL steps with a conversion to RGB (a function or a small class)
_RGB_STEPS = {"MaybeConvertMode", "_convert_to_rgb"}
