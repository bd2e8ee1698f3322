"""Evaluation jobs: retrieval metrics of models on a labelled catalog, index recall."""

from .ann import AnnResult, ann_vs_exact
from .labels import LabelledCatalog, holdout_mask, load_labelled
from .options import EvalOptions
from .plot import plot_recall
from .report import EvalReport, ModelEval
from .retrieval import RetrievalResult, retrieval_metrics
from .run import Questions, evaluate, evaluate_index, evaluate_model, load_embedder, parse_model

__all__ = [
    "AnnResult",
    "EvalOptions",
    "EvalReport",
    "LabelledCatalog",
    "ModelEval",
    "Questions",
    "RetrievalResult",
    "ann_vs_exact",
    "evaluate",
    "evaluate_index",
    "evaluate_model",
    "holdout_mask",
    "load_embedder",
    "load_labelled",
    "parse_model",
    "plot_recall",
    "retrieval_metrics",
]
