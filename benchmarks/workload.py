"""Real-photo-like benchmark workload: product-photo-sized JPEGs built from real pictures.

Sources are the real photos that ship with scikit-image (cat, coffee, rocket, motorcycle,
astronaut, ...) and Fashion-MNIST product photos (Debian ``dataset-fashion-mnist``),
upscaled. Each image gets its own random crop, size (800-1200 px by default, like a shop's
product photos), aspect ratio, mirror, lighting and a little sensor grain, and is saved as a
JPEG at quality 90, so files weigh a few hundred KB and decoding costs what it costs on
real catalogs. Everything is seeded: the same arguments give the same bytes.

    python -m benchmarks.workload OUT_DIR --count 1000          # writes OUT_DIR/catalog.csv
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

log = logging.getLogger(__name__)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
SKIMAGE_PHOTOS = (
    "chelsea", "coffee", "rocket", "astronaut", "stereo_motorcycle", "hubble_deep_field",
    "colorwheel", "brick", "camera", "grass", "gravel", "horse", "coins", "clock", "moon",
    "page", "immunohistochemistry", "logo", "text", "cat",
)  # fmt: skip
MANIFEST = "catalog.csv"
SPEC_FILE = "workload.json"


@dataclass(frozen=True)
class Spec:
    count: int
    min_side: int = 800
    max_side: int = 1200
    quality: int = 92
    fashion_share: float = 0.5
    seed: int = 0


@lru_cache(maxsize=1)
def skimage_photos() -> tuple[np.ndarray, ...]:
    """The scikit-image sample photos available offline, as RGB uint8 arrays."""
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # some samples need a download: skip them
            continue
        if isinstance(arr, tuple):
            arr = arr[0]
        if arr.dtype != np.uint8:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (255 * (arr.astype(np.float32) - lo) / max(1e-9, hi - lo)).astype(np.uint8)
        img = Image.fromarray(arr)
        out.append(np.asarray(img.convert("RGB")))
    return tuple(out)


@lru_cache(maxsize=1)
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test split: (10000, 28, 28) uint8 images and their labels."""
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    return images, labels


def _size(rng: np.random.Generator, spec: Spec) -> tuple[int, int]:
    long_side = int(rng.integers(spec.min_side, spec.max_side + 1))
    aspect = float(rng.choice([1.0, 1.0, 0.75, 0.8, 1.25, 1.333]))
    w, h = (
        (long_side, int(long_side / aspect))
        if aspect >= 1
        else (int(long_side * aspect), long_side)
    )
    return max(16, w), max(16, h)


def _photo(rng: np.random.Generator, spec: Spec) -> tuple[Image.Image, str]:
    photos = skimage_photos()
    k = int(rng.integers(len(photos)))
    arr = photos[k]
    h, w = arr.shape[:2]
    frac = rng.uniform(0.6, 1.0)
    cw, ch = max(8, int(w * frac)), max(8, int(h * frac))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = Image.fromarray(arr[y : y + ch, x : x + cw])
    return img.resize(_size(rng, spec), Image.Resampling.BICUBIC), f"photo-{k}"


def _fashion(rng: np.random.Generator, spec: Spec) -> tuple[Image.Image, str]:
    images, labels = fashion_mnist()
    k = int(rng.integers(len(images)))
    grey = Image.fromarray(255 - images[k])  # product dark on a light studio background
    w, h = _size(rng, spec)
    side = int(min(w, h) * rng.uniform(0.7, 0.95))
    item = grey.resize((side, side), Image.Resampling.BICUBIC).filter(ImageFilter.SMOOTH)
    tint = tuple(int(c) for c in rng.integers(60, 256, 3))
    coloured = ImageOps.colorize(item, black=(0, 0, 0), white=(255, 255, 255), mid=tint)
    canvas = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(215, 256, 3)))
    canvas.paste(coloured, ((w - side) // 2, (h - side) // 2))
    return canvas, FASHION_CLASSES[int(labels[k])]


def make_image(i: int, spec: Spec) -> tuple[Image.Image, str]:
    """Image ``i`` of the workload and its category (deterministic in ``spec.seed`` and i)."""
    rng = np.random.default_rng([spec.seed, i])
    img, category = _fashion(rng, spec) if rng.random() < spec.fashion_share else _photo(rng, spec)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.85, 1.2))
    arr = np.asarray(img, dtype=np.int16)
    grain = rng.normal(0.0, rng.uniform(4.0, 8.0), arr.shape).astype(np.int16)
    return Image.fromarray(np.clip(arr + grain, 0, 255).astype(np.uint8)), category


def prefix(manifest: Path, n: int) -> Path:
    """A manifest of the first ``n`` rows beside ``manifest`` (the same image files)."""
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if n >= len(rows):
        return manifest
    path = manifest.with_name(f"catalog-first-{n}.csv")
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:n])
    return path


def build(out: Path, spec: Spec) -> Path:
    """Write ``spec.count`` JPEGs and a CSV manifest under ``out``; reuse a matching build."""
    out.mkdir(parents=True, exist_ok=True)
    manifest, spec_file = out / MANIFEST, out / SPEC_FILE
    if (
        manifest.is_file()
        and spec_file.is_file()
        and json.loads(spec_file.read_text()) == asdict(spec)
    ):
        return manifest
    (out / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(spec.count):
        img, category = make_image(i, spec)
        rel = f"img/{i // 1000:03d}/p{i:06d}.jpg"
        (out / rel).parent.mkdir(exist_ok=True)
        img.save(out / rel, "JPEG", quality=spec.quality)
        rows.append(
            {
                "id": f"p{i:06d}",
                "image": rel,
                "title": f"{category} {i}",
                "category": category,
                "price": f"{5 + (i * 37) % 200}.99",
                "brand": ("Acme", "Globex", "Initech", "Umbrella")[i % 4],
            }
        )
        if (i + 1) % 1000 == 0:
            log.info("workload: %d/%d images", i + 1, spec.count)
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id", "image"])
        writer.writeheader()
        writer.writerows(rows)
    spec_file.write_text(json.dumps(asdict(spec)))
    return manifest


def describe(out: Path) -> dict[str, float]:
    """Count, mean file size (KB) and mean pixel size of a built workload."""
    files = sorted((out / "img").rglob("*.jpg"))
    sizes = [f.stat().st_size for f in files]
    sample = files[:: max(1, len(files) // 50)]
    dims = [Image.open(f).size for f in sample]
    return {
        "images": len(files),
        "mean_kb": round(sum(sizes) / max(1, len(sizes)) / 1024, 1),
        "mean_width": round(sum(d[0] for d in dims) / max(1, len(dims))),
        "mean_height": round(sum(d[1] for d in dims) / max(1, len(dims))),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--min-side", type=int, default=800)
    parser.add_argument("--max-side", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = Spec(args.count, args.min_side, args.max_side, seed=args.seed)
    print(build(args.out, spec))
    print(json.dumps(describe(args.out)))


if __name__ == "__main__":
    main()
