"""Shopper-style views of a catalog photo: what a phone photo of the product looks like.

A catalog photo (a product, usually on a plain backdrop) is cut out from its backdrop,
partly cropped, flipped, rotated, put in perspective, pasted at a random scale and place
onto a real background photo, partly occluded, re-lit (white balance, brightness,
contrast), blurred, given sensor noise and JPEG-recompressed. Some training views are
framed closer (``zoom``): a window of the photo around the product, as one of the query's
crops (``search/query_crops.py``) sees it, at the same detail.

Two families share the code but not their parameters nor their backgrounds: ``TRAIN``
makes the training views; ``EVAL`` (other backgrounds, other ranges, and a few operations
training never sees) simulates the shopper queries that judge a model, so a score is not
the training augmentation scoring itself. Everything is drawn from the ``random.Random``
passed in: a view is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


@dataclass(frozen=True)
class ViewFamily:
    """Ranges of every distortion (fractions are of the output frame / the product)."""

    name: str
    size: int = 256  # longer side of the view, pixels
    keep: tuple[float, float] = (0.75, 1.0)  # share of the product's width/height kept
    flip_p: float = 0.5
    rotate: float = 25.0  # max degrees either way
    perspective: float = 0.12  # max corner shift, share of the product's size
    scale: tuple[float, float] = (0.35, 0.9)  # product width / frame width
    background_p: float = 0.85  # else a plain, slightly tinted backdrop
    occlude_p: float = 0.3
    occlude: tuple[float, float] = (0.05, 0.2)  # occluded share of the product's area
    gains: float = 0.15  # white balance: per-channel gain 1 +- gains
    brightness: tuple[float, float] = (0.7, 1.25)
    contrast: tuple[float, float] = (0.75, 1.2)
    saturation: tuple[float, float] = (0.7, 1.3)
    blur_p: float = 0.4
    blur: tuple[float, float] = (0.3, 1.6)  # Gaussian radius in pixels
    motion_p: float = 0.0  # box blur along one axis (camera shake)
    noise: float = 6.0  # max sensor-noise sigma, grey levels
    jpeg: tuple[int, int] = (45, 90)
    # a closer framing: the frame cut to a window of this share of its side around the
    # product (what one of the query's crops sees, search/query_crops.py)
    zoom_p: float = 0.0
    zoom: tuple[float, float] = (0.5, 0.8)


TRAIN = ViewFamily("train", zoom_p=0.5)
EVAL = ViewFamily(
    "eval",
    size=240,
    keep=(0.7, 1.0),
    flip_p=0.3,
    rotate=18.0,
    perspective=0.16,
    scale=(0.4, 0.8),
    background_p=0.9,
    occlude_p=0.2,
    occlude=(0.05, 0.15),
    gains=0.2,
    brightness=(0.65, 1.2),
    contrast=(0.7, 1.15),
    saturation=(0.6, 1.2),
    blur_p=0.3,
    blur=(0.5, 1.5),
    motion_p=0.25,
    noise=8.0,
    jpeg=(35, 80),
)


def shopper_view(
    photo: Image.Image,
    family: ViewFamily,
    backgrounds: Sequence[Image.Image],
    rng: random.Random,
) -> Image.Image:
    """One simulated shopper photo of ``photo`` (RGB in, RGB out)."""
    zoom, size = 1.0, family.size
    if family.zoom_p > 0 and rng.random() < family.zoom_p:  # framed closer: a larger frame
        zoom = rng.uniform(*family.zoom)
        family = dataclasses.replace(family, size=int(family.size / zoom))
    product = _cut_out(photo.convert("RGB"), rng, family)
    if rng.random() < family.flip_p:
        product = product.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    frame = _backdrop(family, backgrounds, rng)
    product = _fit(product, frame.size, family, rng)  # geometry at the final size: cheap
    product = product.rotate(rng.uniform(-family.rotate, family.rotate), Image.BILINEAR, True)
    product = _perspective(product, family.perspective, rng)
    box = _paste(frame, product, rng)
    if backgrounds and rng.random() < family.occlude_p:
        _occlude(frame, product.size, family, backgrounds, rng)
    if zoom < 1.0:
        frame = _zoom(frame, box, zoom, rng)
        if max(frame.size) != size:  # a pixel or two off after rounding
            r = size / max(frame.size)
            frame = frame.resize((round(frame.width * r), round(frame.height * r)))
    frame = _relight(frame, family, rng)
    return _degrade(frame, family, rng)


def _cut_out(img: Image.Image, rng: random.Random, family: ViewFamily) -> Image.Image:
    """RGBA: a partial crop of the photo, its flat backdrop (if any) made transparent."""
    w, h = img.size
    kw, kh = rng.uniform(*family.keep), rng.uniform(*family.keep)
    cw, ch = max(8, int(w * kw)), max(8, int(h * kh))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if max(img.size) > family.size:  # the view never needs more pixels than its frame
        img.thumbnail((family.size, family.size), Image.BILINEAR)
    return img.convert("RGBA") if (mask := backdrop_mask(img)) is None else _with_alpha(img, mask)


def backdrop_mask(img: Image.Image, tolerance: int = 28) -> Image.Image | None:
    """'L' mask of the product (255) against a flat backdrop, or None when there is none.

    The backdrop colour is the median of the border; a photo whose border is not mostly
    that colour (a scene, not a studio shot) has no backdrop to remove.
    """
    a = np.asarray(img.convert("RGB"), np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    ref = np.median(border, axis=0)
    if np.mean(np.abs(border - ref).max(axis=1) <= tolerance) < 0.8:
        return None
    fg = np.abs(a - ref).max(axis=2) > tolerance
    if fg.mean() < 0.02:
        return None  # nothing but backdrop: keep the whole picture
    mask = Image.fromarray((fg * 255).astype(np.uint8))
    return mask.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1))


def _with_alpha(img: Image.Image, mask: Image.Image) -> Image.Image:
    out = img.convert("RGBA")
    out.putalpha(mask)
    return out


def _perspective(img: Image.Image, amount: float, rng: random.Random) -> Image.Image:
    """Move each corner by up to ``amount`` of the size (a photo taken at an angle)."""
    if amount <= 0:
        return img
    w, h = img.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [
        (x + rng.uniform(-amount, amount) * w, y + rng.uniform(-amount, amount) * h) for x, y in src
    ]
    xs, ys = [p[0] for p in dst], [p[1] for p in dst]
    shift = [(x - min(xs), y - min(ys)) for x, y in dst]
    size = (max(8, int(max(xs) - min(xs))), max(8, int(max(ys) - min(ys))))
    coeffs = _perspective_coeffs(shift, src)
    return img.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.BILINEAR)


def _perspective_coeffs(
    dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]
) -> list[float]:
    """PIL's 8 coefficients mapping output points ``dst`` to input points ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs = np.array([c for p in src for c in p], np.float64)
    return np.linalg.solve(np.array(rows, np.float64), rhs).tolist()


def _backdrop(
    family: ViewFamily, backgrounds: Sequence[Image.Image], rng: random.Random
) -> Image.Image:
    """A random crop of a background photo (or a plain tinted backdrop), RGB."""
    aspect = rng.choice((1.0, 0.75, 4 / 3))
    w = family.size if aspect >= 1 else int(family.size * aspect)
    h = int(w / aspect)
    if not backgrounds or rng.random() >= family.background_p:
        tint = tuple(rng.randint(170, 255) for _ in range(3))
        return Image.new("RGB", (w, h), tint)
    bg = rng.choice(backgrounds)
    bw, bh = bg.size
    zoom = rng.uniform(0.4, 1.0)
    cw = max(16, int(min(bw, bh * aspect) * zoom))
    ch = max(16, int(cw / aspect))
    x0, y0 = rng.randint(0, max(0, bw - cw)), rng.randint(0, max(0, bh - ch))
    return bg.crop((x0, y0, x0 + cw, y0 + ch)).convert("RGB").resize((w, h), Image.BILINEAR)


def _fit(
    product: Image.Image, frame: tuple[int, int], family: ViewFamily, rng: random.Random
) -> Image.Image:
    """The product resized to its share of the frame (``family.scale`` of the width)."""
    fw, fh = frame
    pw = max(8, int(fw * rng.uniform(*family.scale)))
    ph = max(8, int(product.height * pw / product.width))
    if ph > fh * 0.95:  # tall products: fit the height instead
        ph = int(fh * rng.uniform(0.6, 0.95))
        pw = max(8, int(product.width * ph / product.height))
    return product.resize((pw, ph), Image.BILINEAR, reducing_gap=2.0)


def _paste(
    frame: Image.Image, product: Image.Image, rng: random.Random
) -> tuple[int, int, int, int]:
    """Paste ``product`` at a random place; its box (x0, y0, x1, y1) in the frame."""
    fw, fh = frame.size
    pw, ph = product.size
    x = rng.randint(-pw // 10, max(-pw // 10, fw - pw + pw // 10))
    y = rng.randint(-ph // 10, max(-ph // 10, fh - ph + ph // 10))
    frame.paste(product, (x, y), product)
    return x, y, x + pw, y + ph


def _zoom(
    frame: Image.Image,
    box: tuple[int, int, int, int],
    s: float,
    rng: random.Random,
) -> Image.Image:
    """A window of ``s`` of the frame's sides that holds the product's centre."""
    fw, fh = frame.size
    cw, ch = max(16, int(fw * s)), max(16, int(fh * s))
    cx = min(max((box[0] + box[2]) // 2, 0), fw - 1)
    cy = min(max((box[1] + box[3]) // 2, 0), fh - 1)
    # the centre falls anywhere in the middle 80% of the window
    x0 = cx - int(cw * rng.uniform(0.1, 0.9))
    y0 = cy - int(ch * rng.uniform(0.1, 0.9))
    x0, y0 = min(max(x0, 0), fw - cw), min(max(y0, 0), fh - ch)
    return frame.crop((x0, y0, x0 + cw, y0 + ch))


def _occlude(
    frame: Image.Image,
    product_size: tuple[int, int],
    family: ViewFamily,
    backgrounds: Sequence[Image.Image],
    rng: random.Random,
) -> None:
    """Cover a share of the frame near its centre with a patch of another picture."""
    fw, fh = frame.size
    area = rng.uniform(*family.occlude) * fw * fh * 0.5
    ow = max(4, int((area * rng.uniform(0.5, 2.0)) ** 0.5))
    oh = max(4, int(area / ow))
    patch = _backdrop(ViewFamily("patch", size=max(ow, oh)), backgrounds, rng).resize((ow, oh))
    frame.paste(patch, (rng.randint(0, max(0, fw - ow)), rng.randint(0, max(0, fh - oh))))


def _relight(img: Image.Image, family: ViewFamily, rng: random.Random) -> Image.Image:
    gains = np.array([rng.uniform(1 - family.gains, 1 + family.gains) for _ in range(3)])
    a = np.asarray(img, np.float32) * gains
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(*family.brightness))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(*family.contrast))
    return ImageEnhance.Color(img).enhance(rng.uniform(*family.saturation))


def _degrade(img: Image.Image, family: ViewFamily, rng: random.Random) -> Image.Image:
    if rng.random() < family.blur_p:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*family.blur)))
    if rng.random() < family.motion_p:
        k = rng.choice((3, 5))
        kernel = [1.0 / k if (i // k == k // 2) else 0.0 for i in range(k * k)]
        if rng.random() < 0.5:  # vertical shake instead of horizontal
            kernel = [1.0 / k if (i % k == k // 2) else 0.0 for i in range(k * k)]
        img = img.filter(ImageFilter.Kernel((k, k), kernel))
    sigma = rng.uniform(0, family.noise)
    if sigma > 0.5:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(
            0, sigma, (img.height, img.width, 3)
        )
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(*family.jpeg))
    buf.seek(0)
    return Image.open(buf).convert("RGB")
