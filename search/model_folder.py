"""The metadata block (``"vsearch"``) of an open_clip model folder, read in one place.

A ``local-dir:`` model folder holds ``open_clip_config.json``; vsearch adds a ``vsearch``
block to it: ``has_text`` (false for image-only models), and for models made by
``vsearch finetune`` the base model, the objective and strategy, the options and the
verdict (``improved``) that ``vsearch promote`` checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOCAL_DIR_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"


def folder_of(model_name: str) -> Path | None:
    """The folder of a ``local-dir:`` model name (None for other models)."""
    if not model_name.startswith(LOCAL_DIR_PREFIX):
        return None
    return Path(model_name[len(LOCAL_DIR_PREFIX) :]).expanduser()


def read_vsearch_block(model: str | Path) -> dict[str, Any] | None:
    """The ``vsearch`` block of a model folder (a folder path or a ``local-dir:`` name).

    None when the model is not a folder, or its config cannot be read.
    """
    folder = folder_of(model) if isinstance(model, str) else Path(model)
    if folder is None:
        return None
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    block = config.get("vsearch")
    return block if isinstance(block, dict) else None


def finetune_block(model: str | Path) -> dict[str, Any] | None:
    """The block of a model written by ``vsearch finetune`` (None for any other model)."""
    block = read_vsearch_block(model)
    return block if block is not None and "strategy" in block else None
