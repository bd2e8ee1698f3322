"""The label objective's checks and verdict: answerable set-ups, judged on held-out items.

Before training: every label having one item (nothing to learn from labels), or no
validation query with a second item of its label (no epoch can be picked), is refused
with a clear message; no held-out query means no verdict (reported as not improved). After training: the held-out items (``vsearch eval``'s
queries, never trained on nor used to pick the epoch) search the whole catalog with the
base and with the adapted model, and :func:`judge` gives the verdict.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from search.errors import ConfigError

from ..evaluation.labels import LabelledCatalog, holdout_mask
from ..evaluation.scores import Queries, QueryScores, Verdict, judge, score
from .data import Split, TrainingSet

log = logging.getLogger(__name__)


def check_answerable(catalog: LabelledCatalog, pool: LabelledCatalog, split: Split) -> None:
    """Refuse set-ups where labels cannot teach or the result cannot be measured."""
    counts = Counter(catalog.labels)
    if all(c == 1 for c in counts.values()):
        raise ConfigError(
            f"every item has its own {catalog.label_column!r} label: labels cannot teach "
            "which items match. Use --objective instance (the default without labels), which "
            "learns from one photo per product"
        )
    pool_counts = Counter(pool.labels)
    val = sum(1 for i in split.val if pool_counts[pool.labels[i]] > 1)
    if val == 0:
        raise ConfigError(
            f"nothing to pick an epoch on: no validation item has a second item with its "
            f"{catalog.label_column!r} label. Give more items per label, or raise --val-fraction"
        )
    held = sum(1 for n in np.nonzero(_mask(catalog, split))[0] if counts[catalog.labels[n]] > 1)
    if held == 0:
        log.warning(
            "no held-out item has a second item with its label: the result cannot be judged "
            "and will be reported as not improved (raise --holdout)"
        )


def _mask(catalog: LabelledCatalog, split: Split) -> np.ndarray:
    return holdout_mask(catalog.ids, split.holdout_fraction, split.seed)


def label_scores(
    vectors: np.ndarray, catalog: LabelledCatalog, queries: np.ndarray, ok: np.ndarray
) -> QueryScores:
    """Each query item searches every other readable item; right = same label."""
    labels = np.asarray(catalog.labels, dtype=object)
    gallery = np.nonzero(ok)[0]
    row_of = np.full(len(catalog), -1)
    row_of[gallery] = np.arange(gallery.size)
    q = [i for i in np.nonzero(queries & ok)[0] if np.sum(labels[gallery] == labels[i]) > 1]
    relevant = [row_of[gallery[(labels[gallery] == labels[i]) & (gallery != i)]] for i in q]
    q_arr = np.asarray(q, np.int64)
    return score(
        vectors[gallery],
        Queries(
            vectors[q_arr] if q else np.zeros((0, vectors.shape[1]), np.float32),
            relevant,
            q_arr,
            exclude=row_of[q_arr] if q else None,
        ),
    )


def judge_labels(
    data: TrainingSet, before: np.ndarray, after: np.ndarray, seed: int
) -> tuple[Verdict, QueryScores, QueryScores]:
    """The verdict on the held-out items of ``data.catalog`` (the whole catalog; ``ok``: its
    readable items): (verdict, base scores, adapted scores)."""
    catalog, ok = data.catalog, data.ok
    queries = _mask(catalog, data.split)
    old = label_scores(before, catalog, queries, ok)
    new = label_scores(after, catalog, queries, ok)
    return judge(new, old, seed=seed), old, new
