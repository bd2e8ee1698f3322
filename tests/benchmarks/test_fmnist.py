"""The Fashion-MNIST reader behind the labelled transfer benchmark, on idx files made here."""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.fmnist import CLASSES, FILES, balanced_sample, load_split, write_catalog
from search.errors import CatalogError


def _write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    img_name, lbl_name = FILES[split]
    n, rows, cols = images.shape
    (folder / img_name).write_bytes(
        gzip.compress(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    )
    (folder / lbl_name).with_suffix("").write_bytes(  # plain idx: the .gz is optional
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes()
    )


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # a pixel that tells which item it is
        _write_split(tmp_path, split, images, labels)
    return tmp_path


def test_idx_files_read_back_exactly(idx_dir: Path):
    x, y = load_split("test", idx_dir)
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [i % 10 for i in range(20)]
    assert (x[:, 0, 0] == y).all()


def test_broken_or_unknown_files_are_catalog_errors(idx_dir: Path):
    with pytest.raises(CatalogError, match="unknown Fashion-MNIST split"):
        load_split("validation", idx_dir)
    (idx_dir / FILES["train"][0]).write_bytes(gzip.compress(b"\0" * 32))
    with pytest.raises(CatalogError, match="not an idx3 image file"):
        load_split("train", idx_dir)


def test_sample_is_balanced_seeded_and_sorted():
    labels = np.repeat(np.arange(10), 30)
    picked = balanced_sample(labels, 25, seed=3)
    counts = np.bincount(labels[picked], minlength=10)
    assert sorted(counts.tolist()) == [2] * 5 + [3] * 5
    assert (np.diff(picked) > 0).all()
    assert picked.tolist() == balanced_sample(labels, 25, seed=3).tolist()
    assert picked.tolist() != balanced_sample(labels, 25, seed=4).tolist()


def test_catalog_has_one_png_and_row_per_sampled_photo(idx_dir: Path, tmp_path: Path):
    manifest = write_catalog(tmp_path / "cat", train=20, test=10, data_dir=idx_dir)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 30 and {r["split"] for r in rows} == {"train", "test"}
    x, y = load_split("test", idx_dir)
    for row in rows:
        if row["split"] != "test":
            continue
        index = int(row["id"].rsplit("-", 1)[1])
        pixels = np.asarray(Image.open(manifest.parent / row["image"]))
        assert (pixels == x[index]).all()
        assert row["category"] == CLASSES[int(y[index])]
