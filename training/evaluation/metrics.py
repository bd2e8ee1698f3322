"""Retrieval metrics in plain numpy: exact k-NN, recall@k, mAP@k, ANN-vs-exact recall.

Definitions (the usual ones of the image-retrieval literature):

- ``recall@k``: the fraction of queries with at least one relevant item (same label) among
  their top ``k`` results (a "hit rate"; what deep metric-learning papers call Recall@K).
- ``mAP@k``: the mean over queries of AP@k = (1 / min(R, k)) * sum_{i<=k} P@i * rel_i, where
  R is the number of relevant items of the query in the gallery.
- ANN recall@k: the fraction of the exact top ``k`` neighbours that an approximate index
  returns among its top ``k`` (how much the index loses against brute force).

A query never matches itself: :func:`exact_knn` takes the positions of the queries in the
gallery and masks them out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def exact_knn(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    self_index: Sequence[int] | np.ndarray | None = None,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-``k`` by inner product (cosine for unit vectors).

    Returns ``(indices, scores)``, both (Q, k'), with k' = min(k, usable gallery size).
    ``self_index[q]`` is the gallery position of query ``q`` (or -1), which is excluded.
    """
    q = np.asarray(queries, np.float32)
    g = np.asarray(gallery, np.float32)
    k = int(min(k, g.shape[0] - (1 if self_index is not None else 0)))
    if k <= 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), np.int64), np.zeros((q.shape[0], 0), np.float32)
    out_i = np.empty((q.shape[0], k), np.int64)
    out_s = np.empty((q.shape[0], k), np.float32)
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ g.T
        if self_index is not None:
            pos = np.asarray(self_index[start : start + chunk], np.int64)
            rows = np.nonzero(pos >= 0)[0]
            sims[rows, pos[rows]] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_s = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        out_i[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        out_s[start : start + chunk] = np.take_along_axis(part_s, order, axis=1)
    return out_i, out_s


def relevance(
    neighbours: np.ndarray, query_labels: Sequence[object], gallery_labels: Sequence[object]
) -> np.ndarray:
    """(Q, k) booleans: does neighbour j of query i share the query's label?"""
    glab = np.asarray(gallery_labels, dtype=object)
    qlab = np.asarray(query_labels, dtype=object)
    if neighbours.size == 0:
        return np.zeros(neighbours.shape, bool)
    return glab[neighbours] == qlab[:, None]


def recall_at_k(rel: np.ndarray, k: int) -> float:
    """Fraction of queries with a relevant item in their top ``k`` (``rel`` is (Q, >=k))."""
    if rel.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.any(rel[:, :k], axis=1)))


def average_precision_at_k(rel: np.ndarray, n_relevant: Sequence[int], k: int) -> np.ndarray:
    """AP@k per query: (1 / min(R, k)) * sum_{i<=k} P@i * rel_i (0 where R is 0)."""
    r = np.asarray(rel[:, :k], np.float64)
    if r.shape[0] == 0:
        return np.zeros(0)
    ranks = np.arange(1, r.shape[1] + 1, dtype=np.float64)
    precision = np.cumsum(r, axis=1) / ranks
    denom = np.minimum(np.asarray(n_relevant, np.float64), k)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.where(denom > 0, (precision * r).sum(axis=1) / denom, 0.0)
    return ap


def map_at_k(rel: np.ndarray, n_relevant: Sequence[int], k: int) -> float:
    """Mean of :func:`average_precision_at_k` over queries."""
    if rel.shape[0] == 0:
        return float("nan")
    return float(np.mean(average_precision_at_k(rel, n_relevant, k)))


def count_relevant(
    query_labels: Sequence[object],
    gallery_labels: Sequence[object],
    self_index: Sequence[int] | None = None,
) -> np.ndarray:
    """How many gallery items share each query's label (the query itself not counted)."""
    glab = np.asarray(gallery_labels, dtype=object)
    values, counts = np.unique(glab.astype(str), return_counts=True)
    table = dict(zip(values.tolist(), counts.tolist(), strict=True))
    out = np.array([table.get(str(label), 0) for label in query_labels], np.int64)
    if self_index is not None:
        out -= (np.asarray(self_index) >= 0).astype(np.int64)
    return out


def ann_recall(approx: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean fraction of the exact top ``k`` ids that the approximate top ``k`` contains."""
    if not exact:
        return float("nan")
    hits = []
    for a, e in zip(approx, exact, strict=True):
        truth = list(e)[:k]
        if truth:
            hits.append(len(set(list(a)[:k]) & set(truth)) / len(truth))
    return float(np.mean(hits)) if hits else float("nan")
