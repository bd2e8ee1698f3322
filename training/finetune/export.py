"""Write a fine-tuned model as an open_clip folder that ``Embedder("local-dir:PATH")`` loads.

``open_clip_config.json`` holds the model config (the head inside the timm vision tower),
the base model's preprocessing, and a ``vsearch`` block: image-only (``has_text`` false),
the base model, the strategy, the options and the before/after validation metrics.
``open_clip_model.safetensors`` holds the weights. The folder is written next to its final
place and renamed into it, so a reader never sees half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import ConfigError
from search.model_folder import CONFIG_NAME, finetune_block

from ..evaluation.report import json_safe

WEIGHTS_NAME = "open_clip_model.safetensors"
REPORT_NAME = "finetune_report.json"


def prepare_output(path: str | Path, overwrite: bool) -> Path:
    """Check the output folder can be written (refuse to clobber a folder unless asked)."""
    out = Path(path).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out} is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@dataclass
class Export:
    """A fine-tuned model and what its folder says about it: the open_clip model config, the
    base model's preprocessing, the ``vsearch`` block and the run's report."""

    model: Any
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    vsearch: dict[str, Any]
    report: dict[str, Any]


def export_model(export: Export, out: Path) -> Path:
    """Save ``export.model`` (an open_clip CLIP) into ``out``; returns ``out``."""
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model = export.model.cpu()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        config = {
            "model_cfg": export.model_cfg,
            "preprocess_cfg": export.preprocess_cfg,
            "vsearch": {"has_text": False, **export.vsearch},
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(json_safe(config), indent=2, default=str))
        (tmp / REPORT_NAME).write_text(json.dumps(json_safe(export.report), indent=2, default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_verdict(folder: str | Path) -> dict[str, Any] | None:
    """The ``vsearch`` block of a fine-tuned folder (None if it is not one)."""
    return finetune_block(Path(folder))
