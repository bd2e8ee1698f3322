"""What ``vsearch eval`` reports: per-model retrieval metrics, index recall, table and JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .ann import AnnResult
from .retrieval import RetrievalResult


@dataclass
class ModelEval:
    """One model's retrieval quality on the held-out queries."""

    model: str
    describe: str
    dim: int
    result: RetrievalResult
    failed: int = 0
    embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "describe": self.describe,
            "dim": self.dim,
            "failed": self.failed,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 2),
            **self.result.to_dict(),
        }


@dataclass
class EvalReport:
    """Every model evaluated on one labelled catalog with one held-out split."""

    catalog: str
    label_column: str
    items: int
    labels: int
    holdout: float
    seed: int
    models: list[ModelEval] = field(default_factory=list)
    ann: AnnResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "catalog": self.catalog,
                "label_column": self.label_column,
                "items": self.items,
                "labels": self.labels,
                "holdout": self.holdout,
                "seed": self.seed,
                "models": [m.to_dict() for m in self.models],
                "ann": self.ann.to_dict() if self.ann else None,
            }
        )

    def table(self) -> str:
        """A plain-text table, one row per model (and the index recall line)."""
        lines = [
            f"catalog {self.catalog}: {self.items} items, {self.labels} distinct "
            f"{self.label_column!r} labels; held-out queries: {self.holdout:.0%} (seed {self.seed})"
        ]
        if self.models:
            ks = sorted(self.models[0].result.recall)
            maps = sorted(self.models[0].result.map_at)
            head = ["model", "queries"] + [f"R@{k}" for k in ks] + [f"mAP@{k}" for k in maps]
            rows = [
                [m.model, str(m.result.queries)]
                + [f"{m.result.recall[k]:.4f}" for k in ks]
                + [f"{m.result.map_at[k]:.4f}" for k in maps]
                for m in self.models
            ]
            lines += format_rows(head, rows)
        if self.ann:
            a = self.ann
            lines.append(
                f"index {a.collection}: {a.index_type} (ef {a.ef}) recall@{a.k} vs exact search "
                f"= {a.recall:.4f} over {a.queries} queries of {a.count} items "
                f"({a.ms_per_query:.1f} ms/query)"
            )
        return "\n".join(lines)


def format_rows(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])

    return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def json_safe(data: Any) -> Any:
    """``data`` with NaN and infinities as None: reports are valid JSON (which has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    return data
