"""Transfer learning: adapt a backbone to a catalog (head, partial or full fine-tuning).

The names below load lazily, so reading the options (``vsearch finetune --help``) does not
import torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "STRATEGIES": ".options",
    "FinetuneOptions": ".options",
    "FinetuneReport": ".run",
    "finetune": ".run",
    "TrainEvent": ".train",
    "read_verdict": ".export",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
