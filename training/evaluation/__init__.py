"""Evaluation jobs: retrieval metrics of models on a labelled catalog, index recall.

The names below load lazily, so reading the options (``vsearch eval --help``) imports neither
torch nor pymilvus.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnnResult": ".ann",
    "ann_vs_exact": ".ann",
    "LabelledCatalog": ".labels",
    "holdout_mask": ".labels",
    "load_labelled": ".labels",
    "EvalOptions": ".options",
    "plot_recall": ".plot",
    "EvalReport": ".report",
    "ModelEval": ".report",
    "RetrievalResult": ".retrieval",
    "retrieval_metrics": ".retrieval",
    "Questions": ".run",
    "evaluate": ".run",
    "evaluate_index": ".run",
    "evaluate_model": ".run",
    "load_embedder": ".run",
    "parse_model": ".run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
