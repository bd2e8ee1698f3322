"""Recall of Milvus's approximate index (HNSW) against exact search on the live collection.

The stored vectors are read back from Milvus; sampled stored items are the queries; the
truth is a brute-force numpy top-k over the same vectors; the index answers through the
normal search path (with the configured ``ef``). The query item itself is left out of both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from search.errors import CatalogError
from search.store import MilvusStore

from . import metrics

log = logging.getLogger(__name__)


@dataclass
class AnnResult:
    collection: str
    index_type: str
    ef: int
    count: int
    queries: int
    k: int
    recall: float
    ms_per_query: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def stored_vectors(store: MilvusStore, collection: str) -> tuple[list[str], np.ndarray]:
    """Every id of a collection and its stored vector (read back in chunks)."""
    ids = sorted(store.fingerprints(collection))
    vecs: list[np.ndarray] = []
    got: list[str] = []
    for start in range(0, len(ids), 512):
        for row in store.get(collection, ids[start : start + 512], vectors=True):
            got.append(row["id"])
            vecs.append(np.asarray(row["vector"], np.float32))
    dim = vecs[0].shape[0] if vecs else 0
    return got, (np.stack(vecs) if vecs else np.zeros((0, dim), np.float32))


def ann_vs_exact(
    store: MilvusStore, alias: str, *, k: int = 10, queries: int = 200, seed: int = 0
) -> AnnResult:
    """Index recall@k against brute force over the collection behind ``alias``."""
    collection = store.require(alias)
    ids, vectors = stored_vectors(store, collection)
    s = store.settings.store
    if len(ids) < 2:
        raise CatalogError(f"collection {collection!r} holds {len(ids)} items; nothing to compare")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)  # the index metric is cosine
    exact_idx, _ = metrics.exact_knn(unit[picked], unit, k, self_index=picked)
    exact = [[ids[j] for j in row] for row in exact_idx]
    approx: list[list[str]] = []
    t0 = time.perf_counter()
    for start in range(0, picked.size, 64):
        chunk = picked[start : start + 64]
        hits = store.search(collection, vectors[chunk], limit=min(k + 1, len(ids)))
        for q, row in zip(chunk, hits, strict=True):
            approx.append([m.id for m in row if m.id != ids[q]][:k])
    elapsed = time.perf_counter() - t0
    result = AnnResult(
        collection=collection,
        index_type=s.index_type,
        ef=max(s.search_ef, k + 1) if s.index_type.startswith("HNSW") else 0,
        count=len(ids),
        queries=int(picked.size),
        k=k,
        recall=metrics.ann_recall(approx, exact, k),
        ms_per_query=1000 * elapsed / max(1, picked.size),
    )
    log.info("%s: %s recall@%d vs exact = %.4f", collection, s.index_type, k, result.recall)
    return result
