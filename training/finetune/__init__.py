"""Transfer learning: adapt a backbone to a catalog (head, partial or full fine-tuning)."""

from .export import read_verdict
from .options import STRATEGIES, FinetuneOptions
from .run import FinetuneReport, finetune
from .train import TrainEvent

__all__ = [
    "STRATEGIES",
    "FinetuneOptions",
    "FinetuneReport",
    "TrainEvent",
    "finetune",
    "read_verdict",
]
