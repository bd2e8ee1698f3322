"""Evaluation jobs: retrieval metrics of models on a labelled catalog, index recall.

The names below load lazily, so reading the options (``vsearch eval --help``) imports neither
torch nor pymilvus.
"""

from __future__ import annotations

from ..lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)
