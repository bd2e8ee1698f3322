"""Batches for instance discrimination: groups of look-alike items (hard negatives).

In-batch negatives teach most when they are the items a shopper would confuse: each batch
is made of groups of ``k`` neighbours in the base model's space.
"""

from __future__ import annotations

import numpy as np


def nearest(vectors: np.ndarray, k: int = 16, chunk: int = 1024) -> np.ndarray:
    """(N, k') positions of each row's ``k`` most similar other rows, best first."""
    n = vectors.shape[0]
    kk = max(1, min(k, n - 1))
    out = np.zeros((n, kk), np.int64)
    for s in range(0, n, chunk):
        sims = vectors[s : s + chunk] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + s] = -np.inf
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def neighbourhood_batches(
    items: np.ndarray, neighbours: np.ndarray, batch: int, rng: np.random.Generator, k: int = 4
) -> list[np.ndarray]:
    """One epoch of batches made of groups of ``k`` look-alike items (hard negatives).

    ``neighbours[i]``: positions (into ``items``) of item i's nearest items in the base
    model's space. Every item appears once; a one-item remainder is dropped.
    """
    unused = np.ones(len(items), bool)
    flat: list[int] = []
    for seed in rng.permutation(len(items)):
        if not unused[seed]:
            continue
        group = [int(seed)] + [int(j) for j in neighbours[seed] if unused[j]][: k - 1]
        unused[group] = False
        flat += group
    flat_arr = items[np.array(flat, np.int64)]
    return [
        flat_arr[s : s + batch]
        for s in range(0, len(flat_arr), batch)
        if len(flat_arr[s : s + batch]) > 1
    ]
