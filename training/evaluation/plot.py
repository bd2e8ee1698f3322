"""Recall@k curves as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from .report import EvalReport


def plot_recall(report: EvalReport, path: str | Path, title: str = "") -> Path:
    """One recall@k curve (k = 1..10) per model; returns the written path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        for m in report.models:
            curve = m.result.curve
            if curve:
                ks = list(range(1, len(curve) + 1))
                ax.plot(ks, curve, marker="o", label=f"{m.model} ({m.dim}-d)")
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(
            title
            or f"{Path(report.catalog).name}: same {report.label_column!r}, "
            f"{report.models[0].result.queries if report.models else 0} held-out queries"
        )
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
