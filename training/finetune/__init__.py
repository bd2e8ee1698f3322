"""Transfer learning: adapt a backbone to a catalog (head, partial or full fine-tuning).

The names below load lazily, so reading the options (``vsearch finetune --help``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "STRATEGIES": ".options",
    "FinetuneOptions": ".options",
    "FinetuneReport": ".run",
    "finetune": ".run",
    "TrainEvent": ".train",
    "read_verdict": ".export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
