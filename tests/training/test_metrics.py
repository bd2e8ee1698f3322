"""Retrieval metrics against values computed by hand on toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation import metrics
from training.evaluation.labels import holdout_mask
from training.evaluation.retrieval import Cutoffs, retrieval_metrics


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_recall_and_map_by_hand() -> None:
    rel = np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    assert metrics.recall_at_k(rel, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(rel, 2) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(rel, 4) == pytest.approx(2 / 3)
    # q0: hits at ranks 2 and 4 -> (1/2 + 2/4) / min(2, 4) = 0.5; q1: 1/1; q2: 0
    ap = metrics.average_precision_at_k(rel, [2, 1, 3], 4)
    assert ap.tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert metrics.map_at_k(rel, [2, 1, 3], 4) == pytest.approx(0.5)
    # R larger than k: normalised by k (one hit at rank 1, R = 5, k = 2 -> 1/2)
    assert metrics.map_at_k(np.array([[1, 0]], bool), [5], 2) == pytest.approx(0.5)


def test_exact_knn_excludes_the_query_itself() -> None:
    g = np.array([unit(0), unit(10), unit(90), unit(95), unit(180)], np.float32)
    idx, scores = metrics.exact_knn(g[[0, 2]], g, 2, self_index=[0, 2])
    assert idx.tolist() == [[1, 2], [3, 1]]
    assert scores[0, 0] == pytest.approx(math.cos(math.radians(10)), abs=1e-6)
    idx, _ = metrics.exact_knn(g[[0]], g, 1)  # without self_index the query finds itself
    assert idx.tolist() == [[0]]


def test_retrieval_metrics_toy_catalog() -> None:
    # labels: a a b b c ; vectors placed so that item 1's nearest other item is a "b"
    v = np.array([unit(0), unit(50), unit(40), unit(45), unit(180)], np.float32)
    labels = ["a", "a", "b", "b", "c"]
    queries = np.array([True, True, True, False, True])  # "c" has no partner: left out
    res = retrieval_metrics(v, labels, queries, cutoffs=Cutoffs((1, 2), 2))
    assert res.queries == 3 and res.gallery == 5
    # q0 (0 deg): 40 b, 45 b, 50 a -> R@1 0, R@2 0 ; q1 (50): 45 b, 40 b -> 0 ; q2 (40): 45 b -> 1
    assert res.recall[1] == pytest.approx(1 / 3)
    assert res.recall[2] == pytest.approx(1 / 3)
    assert res.map_at[2] == pytest.approx(1 / 3)
    assert res.curve[:2] == pytest.approx([1 / 3, 1 / 3])


def test_ann_recall() -> None:
    exact = [["a", "b", "c"], ["d", "e", "f"]]
    approx = [["a", "c", "x"], ["d", "e", "f"]]
    assert metrics.ann_recall(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)


def test_holdout_split_is_seeded_stable_and_order_free() -> None:
    ids = [f"item-{i}" for i in range(2000)]
    m1 = holdout_mask(ids, 0.25, seed=0)
    assert 0.22 < m1.mean() < 0.28
    assert holdout_mask(ids, 0.25, seed=0).tolist() == m1.tolist()
    assert holdout_mask(ids, 0.25, seed=1).tolist() != m1.tolist()
    shuffled = ids[::-1]
    assert holdout_mask(shuffled, 0.25, seed=0)[::-1].tolist() == m1.tolist()
