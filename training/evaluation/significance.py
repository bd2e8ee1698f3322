"""Uncertainty of retrieval scores: bootstrap intervals and paired tests, by item.

Scores are per query (1 for a hit, 0 for a miss, or a reciprocal rank). Several queries
may come from one catalog item (several simulated shopper photos of one product); they
are not independent, so both the bootstrap and the test resample or flip whole items:
each item's mean over its queries is the unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {"value": finite(self.value), "low": finite(self.low), "high": finite(self.high)}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def finite(x: float) -> float | None:
    """``x`` rounded, or None when it is NaN/inf (JSON has no NaN)."""
    return round(float(x), 4) if math.isfinite(x) else None


def item_means(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Mean score of each distinct item (in sorted item order)."""
    _, inverse = np.unique(items, return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(scores, np.float64))
    return sums / np.bincount(inverse)


def bootstrap(
    scores: np.ndarray, items: np.ndarray, *, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean score with a percentile bootstrap interval over items."""
    per_item = item_means(scores, items)
    if per_item.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, per_item.size, size=(N_RESAMPLES, per_item.size))
    means = per_item[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return Interval(
        float(per_item.mean()),
        float(np.percentile(means, tail)),
        float(np.percentile(means, 100 - tail)),
    )


def paired_test(
    new: np.ndarray, old: np.ndarray, items: np.ndarray, *, seed: int = 0
) -> tuple[float, float]:
    """(p of "new is better", p of "new is worse"): one-sided paired sign-flip tests.

    The statistic is the mean over items of (new - old); under the null hypothesis each
    item's difference is as likely negated. Exact for up to 16 non-zero items, else
    ``N_RESAMPLES`` random flips. Ties (zero differences) carry no evidence either way.
    """
    d = item_means(np.asarray(new, np.float64) - np.asarray(old, np.float64), items)
    d = d[np.abs(d) > 1e-12]
    if d.size == 0:
        return 1.0, 1.0
    observed = d.sum()
    if d.size <= 16:
        signs = ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((-1, 1), size=(N_RESAMPLES, d.size))
    flipped = signs @ d
    better = float(np.mean(flipped >= observed - 1e-12))
    worse = float(np.mean(flipped <= observed + 1e-12))
    return better, worse
