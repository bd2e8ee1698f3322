"""Fashion-MNIST (idx files, e.g. Debian's dataset-fashion-mnist) as a product catalog.

Writes a seeded, class-balanced sample of the 28x28 grey product photos as PNG files plus a
``catalog.csv`` manifest (id, image, category, split), ready for ``vsearch index``,
``vsearch eval`` and ``vsearch finetune``. The model's own preprocessing upscales them.
"""

from __future__ import annotations

import csv
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from search.errors import CatalogError

log = logging.getLogger(__name__)
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _open(path: Path) -> bytes:
    if not path.is_file() and path.suffix == ".gz" and path.with_suffix("").is_file():
        path = path.with_suffix("")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read Fashion-MNIST file {path}: {exc.strerror}") from exc
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx_images(path: Path) -> np.ndarray:
    """(N, rows, cols) uint8 from an idx3 file (magic 2051)."""
    data = _open(path)
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051 or len(data) != 16 + n * rows * cols:
        raise CatalogError(f"{path} is not an idx3 image file")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """(N,) uint8 from an idx1 file (magic 2049)."""
    data = _open(path)
    magic, n = struct.unpack(">II", data[:8])
    if magic != 2049 or len(data) != 8 + n:
        raise CatalogError(f"{path} is not an idx1 label file")
    return np.frombuffer(data, np.uint8, offset=8)


def load_split(
    split: str = "train", data_dir: str | Path = DEFAULT_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the ``train`` (60k) or ``test`` (10k) split."""
    if split not in FILES:
        raise CatalogError(f"unknown Fashion-MNIST split {split!r} (train, test)")
    images, labels = (Path(data_dir) / name for name in FILES[split])
    x, y = read_idx_images(images), read_idx_labels(labels)
    if len(x) != len(y):
        raise CatalogError(f"{images} and {labels} disagree on the number of items")
    return x, y


def balanced_sample(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` indices, as equal per class as possible, seeded, in ascending order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = [
        count // len(classes) + (1 if c < count % len(classes) else 0) for c in range(len(classes))
    ]
    picked = [
        rng.choice(np.nonzero(labels == c)[0], size=min(k, int((labels == c).sum())), replace=False)
        for c, k in zip(classes, per, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def write_catalog(
    target: str | Path,
    *,
    train: int = 3000,
    test: int = 1000,
    seed: int = 0,
    data_dir: str | Path = DEFAULT_DIR,
) -> Path:
    """Write ``train`` + ``test`` sampled photos under ``target``; return the manifest path.

    The manifest's ``split`` column records where each photo came from; ``category`` is the
    class name (the label for retrieval: same category = relevant).
    """
    target = Path(target)
    (target / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, count in (("train", train), ("test", test)):
        if count <= 0:
            continue
        x, y = load_split(split, data_dir)
        for i in balanced_sample(y, count, seed):
            rel = f"images/{split}-{i:05d}.png"
            Image.fromarray(x[i]).save(target / rel)
            rows.append(
                {
                    "id": f"fmnist-{split}-{i:05d}",
                    "image": rel,
                    "category": CLASSES[int(y[i])],
                    "split": split,
                }
            )
    manifest = target / "catalog.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "image", "category", "split"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d Fashion-MNIST photos to %s", len(rows), target)
    return manifest
