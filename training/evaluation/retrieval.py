"""Image-to-image retrieval quality of one set of vectors on a labelled catalog.

Every held-out query searches the whole catalog (exact search), itself excluded; a result
is relevant when it carries the query's label. Queries whose label has no other item are
left out (no right answer exists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import metrics

DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class Cutoffs:
    """Where ranked lists are cut: recall@k for each k of ``recall``, and mAP@``map``."""

    recall: tuple[int, ...] = DEFAULT_KS
    map: int = 10


@dataclass
class RetrievalResult:
    """recall@k for k = 1..max_k, mAP@k, and how many queries were asked."""

    queries: int
    gallery: int
    recall: dict[int, float] = field(default_factory=dict)
    map_at: dict[int, float] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)  # recall@1..max_k

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["recall"] = {f"recall@{k}": v for k, v in self.recall.items()}
        data["map_at"] = {f"mAP@{k}": v for k, v in self.map_at.items()}
        return data


def retrieval_metrics(
    vectors: np.ndarray,
    labels: Sequence[str],
    query_mask: np.ndarray,
    *,
    gallery_mask: np.ndarray | None = None,
    cutoffs: Cutoffs = Cutoffs(),
) -> RetrievalResult:
    """Held-out queries (``query_mask``) against the gallery (default: every item)."""
    ks, map_k = cutoffs.recall, cutoffs.map
    n = len(labels)
    gallery_mask = np.ones(n, bool) if gallery_mask is None else gallery_mask
    labels_arr = np.asarray(labels, dtype=object)
    gal = np.nonzero(gallery_mask)[0]
    in_gallery = np.full(n, -1, np.int64)
    in_gallery[gal] = np.arange(gal.size)
    q = np.nonzero(query_mask)[0]
    # keep only queries with at least one other same-label item in the gallery
    relevant = metrics.count_relevant(labels_arr[q], labels_arr[gal], in_gallery[q])
    q, relevant = q[relevant > 0], relevant[relevant > 0]
    max_k = max(max(ks), map_k)
    result = RetrievalResult(queries=int(q.size), gallery=int(gal.size))
    if q.size == 0:
        return result
    nn, _ = metrics.exact_knn(vectors[q], vectors[gal], max_k, self_index=in_gallery[q])
    rel = metrics.relevance(nn, labels_arr[q], labels_arr[gal])
    result.curve = [metrics.recall_at_k(rel, k) for k in range(1, max_k + 1)]
    result.recall = {k: metrics.recall_at_k(rel, k) for k in ks}
    result.map_at = {map_k: metrics.map_at_k(rel, relevant, map_k)}
    return result
