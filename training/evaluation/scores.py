"""Per-query retrieval scores, their summary with intervals, and the verdict between models.

A query has one right answer set: for "find this product" (the instance task) the catalog
item it was photographed from; for the label task every other item with its label. What
is kept per query is the rank of its first right answer (``inf`` beyond ``max_k``) and,
when the catalog has categories, whether the top result has the query's category.

The verdict is the one rule that ``vsearch finetune`` (best epoch and ``improved``),
``vsearch eval`` (comparisons) and ``vsearch promote`` (refusal) share: a model is better
only when its recall@1 gain is significant (paired, by item, p < ``alpha``) and no guarded
metric (recall@10, category top-1) falls significantly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .significance import Interval, bootstrap, finite, paired_test

KS = (1, 5, 10)
ALPHA = 0.05
PRIMARY = "R@1"
GUARDED = ("R@10", "category@1")


@dataclass
class QueryScores:
    """``items[q]`` the query's catalog item (the unit of resampling), ``rank[q]`` 1-based."""

    items: np.ndarray
    rank: np.ndarray
    category_hit: np.ndarray | None = None

    def metric(self, name: str) -> np.ndarray | None:
        if name.startswith("R@"):
            return (self.rank <= int(name[2:])).astype(np.float64)
        if name == "MRR@10":
            return np.where(self.rank <= 10, 1.0 / self.rank, 0.0)
        if name == "category@1":
            return None if self.category_hit is None else self.category_hit.astype(np.float64)
        raise KeyError(name)

    def names(self) -> list[str]:
        out = [f"R@{k}" for k in KS] + ["MRR@10"]
        return out + (["category@1"] if self.category_hit is not None else [])

    def criterion(self) -> tuple[float, float]:
        """What "better" means when picking an epoch: recall@1, then MRR@10."""
        if self.rank.size == 0:
            return (float("-inf"), float("-inf"))
        return (float(self.metric(PRIMARY).mean()), float(self.metric("MRR@10").mean()))

    def summary(self, seed: int = 0) -> dict[str, Interval]:
        return {n: bootstrap(self.metric(n), self.items, seed=seed) for n in self.names()}  # type: ignore[arg-type]

    def cells(self, names: Sequence[str], seed: int = 0) -> list[str]:
        """Table cells: each named metric with its interval (bootstrapped once per metric)."""
        summary = self.summary(seed)
        return [str(summary[n]) for n in names]

    def to_dict(self, seed: int = 0) -> dict[str, Any]:
        """The number of queries and each metric with its interval (JSON-ready)."""
        summary = self.summary(seed)
        return {"queries": int(self.rank.size), **{k: v.to_dict() for k, v in summary.items()}}


@dataclass
class Queries:
    """Unit query vectors and what answers them.

    relevant[q]: gallery rows that answer query ``q`` (a 1-D array per query, or one row
    number per query); items[q]: the catalog item asking; exclude[q]: a gallery row query
    ``q`` must not see (itself, for catalog items used as queries), or -1; categories[q]:
    its category, when the top hit's category is scored.
    """

    vectors: np.ndarray
    relevant: Sequence[np.ndarray] | np.ndarray
    items: np.ndarray
    exclude: np.ndarray | None = None
    categories: Sequence[str] | None = None


def score(
    gallery: np.ndarray,
    queries: Queries,
    *,
    categories: Sequence[str] | None = None,
    max_k: int = 10,
) -> QueryScores:
    """Exact search of ``queries`` in unit ``gallery`` rows (``categories``: per row)."""
    relevant, exclude = queries.relevant, queries.exclude
    sims = np.asarray(queries.vectors, np.float32) @ np.asarray(gallery, np.float32).T
    if exclude is not None:
        rows = np.nonzero(exclude >= 0)[0]
        sims[rows, exclude[rows]] = -np.inf
    k = min(max_k, sims.shape[1])
    if 0 < k < sims.shape[1]:  # the top k of each row without sorting whole rows
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
    else:
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    rank = np.full(len(top), np.inf)
    for q, row in enumerate(top):
        right = np.atleast_1d(relevant[q])
        where = np.nonzero(np.isin(row, right))[0]
        if where.size:
            rank[q] = where[0] + 1
    cat = None
    if categories is not None and queries.categories is not None and k:
        gal = np.asarray(categories, dtype=object)
        cat = gal[top[:, 0]] == np.asarray(queries.categories, dtype=object)
    return QueryScores(np.asarray(queries.items), rank, cat)


@dataclass
class Verdict:
    """Is ``new`` better than ``old`` on the same queries? With the evidence."""

    improved: bool
    reason: str
    queries: int
    items: int
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "improved": self.improved,
            "reason": self.reason,
            "queries": self.queries,
            "items": self.items,
            "changes": self.changes,
        }


def judge(new: QueryScores, old: QueryScores, *, alpha: float = ALPHA, seed: int = 0) -> Verdict:
    """The verdict rule (see the module docstring)."""
    n_items = int(np.unique(new.items).size)
    if new.rank.size == 0:
        return Verdict(False, "no queries to judge on", 0, 0)
    changes: dict[str, dict[str, Any]] = {}
    for name in new.names():
        a, b = new.metric(name), old.metric(name)
        if a is None or b is None:
            continue
        p_better, p_worse = paired_test(a, b, new.items, seed=seed)
        changes[name] = {
            "before": finite(float(b.mean())),
            "after": finite(float(a.mean())),
            "change": finite(float(a.mean() - b.mean())),
            "p_better": finite(p_better),
            "p_worse": finite(p_worse),
        }
    fell = [g for g in GUARDED if g in changes and changes[g]["p_worse"] < alpha]
    primary = changes[PRIMARY]
    if fell:
        return Verdict(
            False, f"{', '.join(fell)} fell significantly", new.rank.size, n_items, changes
        )
    if primary["change"] <= 0 or primary["p_better"] >= alpha:
        reason = (
            f"recall@1 {primary['before']:.3f} -> {primary['after']:.3f} on {n_items} items never "
            f"trained on: not a significant gain (p = {primary['p_better']:.3g}, needs < {alpha})"
        )
        return Verdict(False, reason, new.rank.size, n_items, changes)
    reason = (
        f"recall@1 {primary['before']:.3f} -> {primary['after']:.3f} on {n_items} items never "
        f"trained on (p = {primary['p_better']:.3g}); no guarded metric fell"
    )
    return Verdict(True, reason, new.rank.size, n_items, changes)
