"""Augmentation for product photos, applied to PIL images before the model's preprocessing.

Random resized crop, horizontal flip, colour jitter, and a background change: when an
image's corners share one flat colour (a studio white, or Fashion-MNIST's black), the
background connected to the corners is flood-filled with a random colour, so the model
learns the product, not the backdrop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

Augment = Callable[[Image.Image], Image.Image]


def change_background(
    img: Image.Image, rng: Any = random, *, p: float = 0.5, tolerance: int = 24
) -> Image.Image:
    """Flood-fill a flat background (seen at all four corners) with a random colour."""
    if rng.random() >= p:
        return img
    img = img.convert("RGB")
    w, h = img.size
    corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
    colours = [img.getpixel(c) for c in corners]
    ref = colours[0]
    if any(max(abs(a - b) for a, b in zip(c, ref, strict=True)) > tolerance for c in colours):  # type: ignore[arg-type]
        return img  # no flat backdrop: leave the photo alone
    fill = tuple(rng.randrange(256) for _ in range(3))
    out = img.copy()
    for corner in corners:
        if out.getpixel(corner) != fill:
            ImageDraw.floodfill(out, corner, fill, thresh=tolerance)
    return out


def product_augment(image_size: int, *, background_p: float = 0.5) -> Augment:
    """The training augmentation: background change, random resized crop, flip, jitter.

    Randomness comes from torch's and Python's global generators, which DataLoader workers
    re-seed per worker and epoch from the run's seed (a private generator would repeat
    itself in every forked worker).
    """
    from torchvision import transforms as T

    geometric = T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.6, 1.0), ratio=(0.8, 1.25)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.3, 0.3, 0.3, 0.03)], p=0.8),
        ]
    )

    def augment(img: Image.Image) -> Image.Image:
        return geometric(change_background(img.convert("RGB"), random, p=background_p))

    return augment
