"""The recall check a lossy precision needs (search/backends/precision_check.py): the metric."""

from __future__ import annotations

import numpy as np
import pytest

from search.backends.precision_check import PrecisionCheck, neighbour_recall


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_neighbour_recall_is_one_for_the_same_neighbours_and_falls_as_they_change() -> None:
    rng = np.random.default_rng(0)
    ref = _unit(rng.standard_normal((300, 64)))
    assert neighbour_recall(ref, ref, 10) == 1.0
    assert neighbour_recall(ref, _unit(ref * 3.0), 10) == 1.0  # scale changes nothing
    small = neighbour_recall(ref, _unit(ref + 0.01 * rng.standard_normal(ref.shape)), 10)
    large = neighbour_recall(ref, _unit(ref + 0.2 * rng.standard_normal(ref.shape)), 10)
    unrelated = neighbour_recall(ref, _unit(rng.standard_normal(ref.shape)), 10)
    assert 1.0 >= small > large > unrelated
    assert unrelated < 0.15  # chance: ~10/299


def test_neighbour_recall_counts_shared_neighbours_exactly() -> None:
    # points on a line: each one's nearest other point is known
    ref = _unit(np.array([[1, 0], [1, 0.1], [1, 0.3], [1, 0.35]], np.float32))
    same = neighbour_recall(ref, ref, 1)
    swapped = neighbour_recall(ref, ref[[1, 0, 2, 3]], 1)  # rows 0 and 1 trade places
    assert same == 1.0 and swapped == 1.0  # 0 and 1 are still each other's neighbour
    moved = ref.copy()
    moved[2] = _unit(np.array([[1, 0.05]], np.float32))[0]  # 2 now sits between 0 and 1
    assert neighbour_recall(ref, moved, 1) < 1.0
    assert neighbour_recall(ref, ref, 50) == 1.0  # k beyond the sample: every other row


def test_neighbour_recall_refuses_mismatched_rows() -> None:
    with pytest.raises(ValueError):
        neighbour_recall(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), 1)
    with pytest.raises(ValueError):
        neighbour_recall(np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), 1)


def test_a_check_passes_at_the_required_recall_and_says_so() -> None:
    base = dict(
        backend="openvino", precision="bf16", images=100, k=10, cos_min=0.99, cos_mean=0.997,
        min_recall=0.95, fp32_core_ms=9.0, candidate_core_ms=5.0, catalog="shop.csv",
        checked="2026-11-30T00:00:00Z",
    )  # fmt: skip
    assert PrecisionCheck(neighbour_recall=0.95, **base).passed
    low = PrecisionCheck(neighbour_recall=0.949, **base)
    assert not low.passed and "below the required 0.950" in low.describe()
