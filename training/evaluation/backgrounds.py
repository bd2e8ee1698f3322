"""Background photos for shopper-style views: a training pool and a disjoint judging pool.

The default pools are real photos that install with scikit-image (a scene, a cup of coffee,
a rocket launch, a cat, stars, tissue under a microscope ...) and its grey textures (brick,
grass, gravel, the moon ...) tinted with random colours. Training and judging never share
a photo. ``--backgrounds DIR`` uses the user's own photos (shelves, tables, hands, rooms),
split by a hash of each file name, about a third for judging.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.errors import ConfigError, ImageError
from search.images import is_image_path, open_image

log = logging.getLogger(__name__)
MAX_SIDE = 640
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry")
TRAIN_TEXTURES = ("brick", "grass", "camera", "moon")
EVAL_PHOTOS = ("chelsea", "hubble_deep_field", "retina")
EVAL_TEXTURES = ("gravel", "coins", "clock", "page")


@dataclass(frozen=True)
class BackgroundPools:
    train: list[Image.Image]
    eval: list[Image.Image]
    source: str


def load_backgrounds(folder: str | Path | None = None, seed: int = 0) -> BackgroundPools:
    """The user's background photos (``folder``) or the default real-photo pools."""
    if folder:
        return _from_folder(Path(folder).expanduser())
    return BackgroundPools(
        _skimage(TRAIN_PHOTOS, TRAIN_TEXTURES, seed),
        _skimage(EVAL_PHOTOS, EVAL_TEXTURES, seed + 1),
        "scikit-image sample photos",
    )


def _from_folder(folder: Path) -> BackgroundPools:
    if not folder.is_dir():
        raise ConfigError(f"background folder {folder} does not exist")
    train: list[Image.Image] = []
    judge: list[Image.Image] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)):
        try:
            img = _shrink(open_image(path.read_bytes()))
        except (OSError, ImageError) as exc:
            log.warning("background %s skipped: %s", path, exc)
            continue
        digest = hashlib.blake2b(path.name.encode(), digest_size=4).digest()
        (judge if digest[0] < 86 else train).append(img)
    if len(train) < 2 or len(judge) < 1:
        raise ConfigError(
            f"background folder {folder} needs at least 4 readable photos "
            f"(found {len(train) + len(judge)})"
        )
    return BackgroundPools(train, judge, str(folder))


def _skimage(photos: tuple[str, ...], textures: tuple[str, ...], seed: int) -> list[Image.Image]:
    from skimage import data

    rng = random.Random(seed)
    out = [_shrink(Image.fromarray(getattr(data, name)()).convert("RGB")) for name in photos]
    for name in textures:
        grey = np.asarray(getattr(data, name)(), np.float32)[..., None] / 255.0
        for _ in range(2):
            tint = np.array([rng.uniform(0.4, 1.0) for _ in range(3)], np.float32)
            rgb = (grey * tint * 255).astype(np.uint8)
            out.append(_shrink(Image.fromarray(rgb)))
    return out


def _shrink(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    return img
