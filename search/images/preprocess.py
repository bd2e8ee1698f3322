"""open_clip's inference transform in PIL and numpy: the query path without torch.

open_clip's image transform for inference is ``Resize(short side, bicubic) -> CenterCrop ->
convert to RGB -> ToTensor -> Normalize`` (``resize_mode`` "shortest", the default) or
``Resize((size, size))`` (``"squash"``). torchvision runs the resize on a PIL image with
PIL's own ``Image.resize``, so doing the same here, with torchvision's arithmetic for the
output size and the crop offsets, gives the same pixels (tests/search/test_preprocessing.py
checks it against open_clip's transform: within one grey level, nearly always equal).
The parameters come from the model (the ``preprocess`` record of
:class:`search.embedder.ModelInfo`), never re-typed.

Other modes (``"longest"``, non-square sizes) are not reimplemented: :meth:`Preprocess.of`
returns None and the caller keeps open_clip's own transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalise a PIL image into the model's float32 (3, H, W) input."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def of(cls, record: Mapping[str, Any], image_size: int) -> Preprocess | None:
        """From a model's preprocessing record; None when this module cannot reproduce it."""
        size = record.get("size", image_size)
        if isinstance(size, Sequence) and not isinstance(size, str):
            if len(set(size)) != 1:
                return None
            size = size[0]
        mode = record.get("resize_mode") or "shortest"
        interpolation = record.get("interpolation") or "bicubic"
        if mode not in ("shortest", "squash") or interpolation not in _FILTERS:
            return None
        mean, std = record.get("mean"), record.get("std")
        if mean is None or std is None:
            return None
        mean = tuple(mean) * 3 if len(tuple(mean)) == 1 else tuple(mean)
        std = tuple(std) * 3 if len(tuple(std)) == 1 else tuple(std)
        return cls(int(size), mean, std, interpolation, mode)  # type: ignore[arg-type]

    def pixels(self, img: Image.Image, *, helper: Executor | None = None) -> np.ndarray:
        """The resized and cropped picture, uint8 (H, W, 3): what ToTensor would read.

        helper: a thread that resizes the lower half of the rows while this one does the
        upper half (PIL lets go of the GIL while it resizes), for a caller waiting on one
        picture: a query. See :meth:`_resize_halves`.
        """
        if img.mode != "RGB":
            img = img.convert("RGB")
        target = self._target(*img.size)
        box = self._crop_box(img.size, target)
        if helper is not None:
            if box is None and target == (self.size, self.size) != img.size:
                box = (0.0, 0.0, float(img.size[0]), float(img.size[1]))  # straight to size
            if box is not None:
                return self._resize_halves(img, box, helper)
        if box is not None:
            img = img.resize((self.size, self.size), _FILTERS[self.interpolation], box=box)
        else:
            if target != img.size:
                img = img.resize(target, _FILTERS[self.interpolation])
            img = _center_crop(img, self.size)
        return np.asarray(img, dtype=np.uint8)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """The normalised model input, float32 (3, H, W)."""
        return self.normalise(self.pixels(img)[None])[0]

    def batch(self, images: Sequence[Image.Image], *, helper: Executor | None = None) -> np.ndarray:
        """A float32 (N, 3, H, W) batch. ``helper`` (threads) shares the resizing: a lone
        picture's in two halves (:meth:`pixels`), several pictures' every other one (a query's
        ten views of the phone photo as sent: 9.7 -> 5.9 ms on the 2-core benchmark CPU)."""
        if not images:
            return np.zeros((0, 3, self.size, self.size), np.float32)
        if len(images) == 1:
            return self.normalise(self.pixels(images[0], helper=helper)[None])
        if helper is None:
            return self.normalise(np.stack([self.pixels(im) for im in images]))
        for im in images:  # a lazily opened image loads here, never in two threads at once
            im.load()
        out = np.empty((len(images), self.size, self.size, 3), np.uint8)
        theirs = {i: helper.submit(self.pixels, images[i]) for i in range(1, len(images), 2)}
        for i in range(0, len(images), 2):
            out[i] = self.pixels(images[i])
        for i, picture in theirs.items():
            out[i] = picture.result()
        return self.normalise(out)

    def _resize_halves(
        self, img: Image.Image, box: tuple[float, float, float, float], helper: Executor
    ) -> np.ndarray:
        """The box resize as two bands of output rows, the lower one on ``helper``.

        Each band is the same resize over its part of the box (same scale, same output
        pixel centres, the filter still reading the source rows around the band's edge), so
        the rows are those of the whole resize up to float rounding: over 302 photo/size
        pairs, 0.0018 % of values differ, by one grey level. A phone photo as the clients
        send it (504 x 378 after the reduced decode): 1.58 -> 0.95 ms on the 2-core
        benchmark CPU, 9.0 -> 8.4 ms for the whole query embedding.
        """
        left, top, right, bottom = box
        upper = self.size // 2
        middle = top + (bottom - top) * upper / self.size
        resample = _FILTERS[self.interpolation]
        img.load()  # both threads read the picture: it must not be loading in one of them
        lower = helper.submit(
            img.resize, (self.size, self.size - upper), resample, (left, middle, right, bottom)
        )
        out = np.empty((self.size, self.size, 3), np.uint8)
        out[:upper] = np.asarray(
            img.resize((self.size, upper), resample, (left, top, right, middle))
        )
        out[upper:] = np.asarray(lower.result())
        return out

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W): (x / 255 - mean) / std, computed as
        x * scale - offset per channel on the transposed copy (two passes instead of four
        and no float transpose: 0.53 -> 0.08 ms for one 224 x 224 picture; equal within
        1.2e-7)."""
        std = np.asarray(self.std, np.float32)
        scale = (np.float32(1) / (np.float32(255) * std))[:, None, None]
        offset = (np.asarray(self.mean, np.float32) / std)[:, None, None]
        out = pixels.transpose(0, 3, 1, 2).astype(np.float32, order="C")
        out *= scale
        out -= offset
        return out

    def _target(self, width: int, height: int) -> tuple[int, int]:
        if self.resize_mode == "squash":
            return self.size, self.size
        # torchvision: the short side becomes size, the long side is truncated
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        return (self.size, new_long) if width <= height else (new_long, self.size)

    def _crop_box(
        self, size: tuple[int, int], target: tuple[int, int]
    ) -> tuple[float, float, float, float] | None:
        """Where the centre crop of the picture resized to ``target`` lies in the source
        picture, when a reduction is followed by a crop; None otherwise (no resize, no
        crop, an enlargement).

        Resizing only that box (PIL's ``box=``) gives the pixels of resizing the whole
        picture and cropping, up to float rounding: each output pixel has the same centre
        and filter support in the source, and the filter still reads source pixels just
        outside the box (over 220 photo/size pairs, 0.009 % of values differ, by one grey
        level). It skips the columns (or rows) the crop throws away: 1.93 -> 1.48 ms for a
        480 x 360 photo.
        """
        (width, height), (new_w, new_h) = size, target
        if new_w >= width or new_h >= height or target == (self.size, self.size):
            return None  # no reduction (an enlargement is resized whole), or no crop
        left, top = _crop_offsets(new_w, new_h, self.size)
        sx, sy = width / new_w, height / new_h
        return (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop: pad with black when smaller, round offsets half to even."""
    width, height = img.size
    if width < size or height < size:
        padded = Image.new("RGB", (max(width, size), max(height, size)), (0, 0, 0))
        padded.paste(img, ((max(size - width, 0)) // 2, (max(size - height, 0)) // 2))
        img, (width, height) = padded, padded.size
    left, top = _crop_offsets(width, height, size)
    if (left, top, width, height) == (0, 0, size, size):
        return img
    return img.crop((left, top, left + size, top + size))


def _crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's centre-crop offsets (left, top), rounded half to even."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
