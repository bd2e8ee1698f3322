"""The model being fine-tuned: the base's open_clip timm vision tower plus a new head.

The head lives INSIDE the open_clip model: the vision config gets ``timm_proj: "linear"``
(or ``"mlp"``) and ``embed_dim`` = the head's output size, so the exported folder is an
ordinary open_clip ``local-dir:`` model. The trunk starts from the base's weights; the
text tower is a tiny placeholder (the result is image-only, ``has_text`` false).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from search.builtin_model import BUILTIN_PREFIX, OPEN_CLIP_CONFIG
from search.embedder import Embedder
from search.errors import ModelError
from search.model_folder import CONFIG_NAME, locate

from .options import FinetuneOptions

log = logging.getLogger(__name__)
TEXT_PLACEHOLDER = OPEN_CLIP_CONFIG["model_cfg"]["text_cfg"]
CLIP_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")


def base_model_cfg(embedder: Embedder, cache_dir: str | Path) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the base model (a folder's config, or open_clip's)."""
    import open_clip

    name = embedder.info.name
    folder = locate(name, embedder.info.pretrained, Path(cache_dir)).folder  # None: a hub name
    if folder is not None:
        cfg = json.loads((folder / CONFIG_NAME).read_text())["model_cfg"]
    else:
        cfg = open_clip.get_model_config(name)
    if not cfg or "timm_model_name" not in cfg.get("vision_cfg", {}):
        raise ModelError(
            f"fine-tuning needs a timm vision tower (such as the built-in "
            f"{BUILTIN_PREFIX}efficientnet-lite0); {name!r} has none"
        )
    return copy.deepcopy(cfg)


def new_model_cfg(base_cfg: dict[str, Any], opts: FinetuneOptions) -> dict[str, Any]:
    cfg = {k: copy.deepcopy(v) for k, v in base_cfg.items() if k in CLIP_KEYS}
    cfg["embed_dim"] = opts.dim
    cfg["vision_cfg"]["timm_proj"] = opts.head
    cfg["vision_cfg"]["timm_model_pretrained"] = False
    cfg["text_cfg"] = copy.deepcopy(TEXT_PLACEHOLDER)
    return cfg


def build_model(cfg: dict[str, Any], base: Embedder, seed: int) -> Any:
    """An open_clip CLIP of ``cfg`` whose trunk holds the base model's trunk weights."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    trunk_state = base.torch_model.visual.trunk.state_dict()
    try:
        model.visual.trunk.load_state_dict(trunk_state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"the base model's trunk does not fit the new tower: {exc}") from exc
    return model


def configure_trainable(visual: Any, opts: FinetuneOptions) -> list[dict[str, Any]]:
    """Freeze per strategy and return optimizer parameter groups with layer-wise rates.

    The head trains at ``lr``; unfrozen backbone layer groups (timm's own grouping, stem
    first) at ``lr * backbone_lr_scale * layer_decay ** depth`` where depth 0 is the top.
    """
    from timm.models import group_parameters

    for p in visual.trunk.parameters():
        p.requires_grad = False
    groups: list[dict[str, Any]] = [
        {"params": list(visual.head.parameters()), "lr": opts.lr, "name": "head"}
    ]
    if opts.strategy == "head":
        return groups
    layers = group_parameters(visual.trunk, visual.trunk.group_matcher())
    order = sorted(layers)  # bottom (stem) .. top
    n_unfrozen = len(order) if opts.strategy == "full" else min(opts.unfreeze, len(order))
    for depth, gid in enumerate(reversed(order[len(order) - n_unfrozen :])):
        params = [visual.trunk.get_parameter(name) for name in layers[gid]]
        for p in params:
            p.requires_grad = True
        lr = opts.lr * opts.backbone_lr_scale * opts.layer_decay**depth
        groups.append({"params": params, "lr": lr, "name": f"trunk.{gid}"})
    log.info(
        "%s: %d of %d backbone layer groups trainable, %d parameters in all",
        opts.strategy,
        n_unfrozen,
        len(order),
        sum(p.numel() for g in groups for p in g["params"]),
    )
    return groups
