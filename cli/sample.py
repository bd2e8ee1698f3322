"""A small sample catalog of real photos, generated offline from scikit-image's bundled images.

Each source photo becomes one "product" with three catalog photos (the original framing, a
crop and a mirrored, re-lit shot), so retrieval can be checked: a photo's siblings should
rank above other products. A ``catalog.csv`` manifest carries title, category, brand and
price.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

log = logging.getLogger(__name__)

PRODUCTS: tuple[tuple[str, str, str], ...] = (
    # (skimage loader, title, category)
    ("chelsea", "Chelsea the tabby cat print", "animals"),
    ("horse", "Horse silhouette stencil", "animals"),
    ("coffee", "Espresso cup on saucer", "kitchen"),
    ("rocket", "Rocket launch photo print", "vehicles"),
    ("stereo_motorcycle", "Red sport motorcycle", "vehicles"),
    ("astronaut", "Astronaut portrait print", "people"),
    ("immunohistochemistry", "Stained tissue micrograph", "science"),
    ("hubble_deep_field", "Hubble deep field poster", "science"),
    ("retina", "Retina fundus image", "science"),
    ("cell", "Cell microscopy print", "science"),
    ("colorwheel", "Colour wheel chart", "design"),
    ("logo", "scikit-image logo sticker", "design"),
    ("coins", "Antique coin set", "collectibles"),
    ("clock", "Wall clock", "home"),
    ("camera", "Photographer with camera print", "people"),
    ("grass", "Grass texture swatch", "textures"),
    ("gravel", "Gravel texture swatch", "textures"),
    ("brick", "Brick wall texture swatch", "textures"),
)
BRANDS = ("Acme", "Northwind", "Globex", "Initech")


def _load(name: str) -> Image.Image:
    import skimage.data

    array = getattr(skimage.data, name)()
    if isinstance(array, tuple):
        array = array[0]
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        array = (255 * (array - array.min()) / max(1e-9, float(np.ptp(array)))).astype(np.uint8)
    img = Image.fromarray(array)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _variants(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    crop = img.crop((w // 10, h // 10, w - w // 8, h - h // 12)).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    mirrored = ImageEnhance.Brightness(ImageOps.mirror(img)).enhance(1.15)
    mirrored = ImageEnhance.Color(mirrored).enhance(0.85)
    return [img, crop, mirrored]


def make_sample_catalog(target: str | Path, *, size: int = 640) -> Path:
    """Write images and ``catalog.csv`` under ``target``; return the manifest path."""
    target = Path(target)
    (target / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    written = 0  # files actually (re)written; an unchanged catalog keeps its file times
    for p, (loader, title, category) in enumerate(PRODUCTS):
        base = _load(loader)
        base.thumbnail((size, size), Image.Resampling.LANCZOS)
        for v, photo in enumerate(_variants(base), 1):
            rel = f"images/{loader}-{v}.jpg"
            buf = io.BytesIO()
            photo.save(buf, "JPEG", quality=90)
            written += _write_if_changed(target / rel, buf.getvalue())
            rows.append(
                {
                    "id": f"SKU-{p + 1:03d}-{v}",
                    "image": rel,
                    "title": title if v == 1 else f"{title} (view {v})",
                    "category": category,
                    "brand": BRANDS[p % len(BRANDS)],
                    "price": f"{9.99 + 5 * p + v:.2f}",
                    "product": f"P{p + 1:03d}",
                }
            )
    manifest = target / "catalog.csv"
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    written += _write_if_changed(manifest, text.getvalue().encode("utf-8"))
    log.info("sample catalog of %d photos in %s (%d files written)", len(rows), target, written)
    return manifest


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` unless ``path`` already holds exactly it (returns whether it wrote).

    A re-run of the demo must leave the files alone: a rewritten file gets a new modification
    time, and the indexer would then re-read and rewrite every row to record it.
    """
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.write_bytes(data)
    return True
