"""Evaluation features: the indexer's decode stage, each image read once, re-runs read none."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import indexer.decoding as decoding_module
from indexer.catalog import load_catalog
from search.config import Settings
from tests.helpers import write_folder
from training.evaluation.features import EmbedderFeatures, extract


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = decoding_module.read_image_bytes

    def counting(ref: str, *args, **kwargs) -> bytes:  # noqa: ANN002, ANN003
        seen.append(ref)
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(decoding_module, "read_image_bytes", counting)
    return seen


def test_each_image_is_read_once_and_a_rerun_reads_none(
    tmp_path: Path, embedder, reads: list[str]
) -> None:
    root = tmp_path / "cat"
    files = write_folder(root, ["coffee", "rocket"], per_product=2)
    (root / "broken.jpg").write_text("not an image")
    items = load_catalog(root).items
    settings = Settings.of(cache_dir=str(tmp_path / "cache"), workers=0)  # count reads in-process
    extractor = EmbedderFeatures(embedder)

    first = extract(items, extractor, settings)
    assert sorted(reads) == sorted(i.image for i in items)  # every file once, broken included
    assert first.computed == 4 and first.ok.sum() == 4
    assert [reason for _, reason in first.failed] == ["not an image (unrecognised format)"]
    direct = embedder.embed_images([str(f) for f in files])
    by_path = {i.image: n for n, i in enumerate(items)}
    for f, vec in zip(files, direct, strict=True):
        assert float(first.vectors[by_path[str(f)]] @ vec) > 0.9999  # what the index stores

    reads.clear()
    again = extract(items, extractor, settings)
    assert [r for r in reads if not r.endswith("broken.jpg")] == []
    assert again.computed == 0 and np.array_equal(again.vectors, first.vectors)

    reads.clear()
    os.utime(files[0], ns=(1, 1))  # touched: read again, same bytes, same vector
    touched = extract(items, extractor, settings)
    assert str(files[0]) in reads and not any(str(f) in reads for f in files[1:])
    assert np.allclose(touched.vectors, first.vectors, atol=1e-6)
