"""Export the image tower once to ONNX (then OpenVINO IR) and cache it with its manifest.

The files of one model live in ``<cache>/exports/<identity>/``, where the identity hashes the
model's name, pretrained tag, checkpoint digest and folder config (so a fine-tuned model
written over the same folder gets a new export), plus :data:`EXPORT_VERSION`:

    manifest.json    the model's provenance (:class:`search.embedder.ModelInfo` fields)
    model.onnx       the image tower, batch dimension dynamic: pixels (N, 3, H, W) -> features
    openvino/        the same graph as OpenVINO IR (model.xml + model.bin, f32 weights)
    calibration.json what ``backend=auto`` measured on each machine (search.backends.calibrate)

Everything is written to a temporary name and renamed into place, so concurrent processes
(the indexer and a server) race harmlessly. Only :func:`export_onnx` imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
ONNX_NAME = "model.onnx"
MANIFEST_NAME = "manifest.json"
OPSET = 17


def identity(name: str, pretrained: str, checkpoint: str, config_text: str = "") -> str:
    """A short hash naming one model's exports."""
    config_digest = hashlib.sha256(config_text.encode()).hexdigest()[:16] if config_text else ""
    key = f"v{EXPORT_VERSION}|{name}|{pretrained}|{checkpoint}|{config_digest}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ExportCache:
    """The export folder of one model."""

    def __init__(self, cache_dir: str | Path, ident: str) -> None:
        self.root = Path(cache_dir) / "exports" / ident

    @property
    def onnx(self) -> Path:
        return self.root / ONNX_NAME

    @property
    def openvino_xml(self) -> Path:
        return self.root / "openvino" / "model.xml"

    def manifest(self) -> dict[str, Any] | None:
        """The recorded model info, or None when nothing (or something unreadable) is cached."""
        try:
            data = json.loads((self.root / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("version") == EXPORT_VERSION else None

    def write_manifest(self, info: dict[str, Any]) -> None:
        write_atomic(
            self.root / MANIFEST_NAME,
            json.dumps({"version": EXPORT_VERSION, "info": info}, indent=2).encode(),
        )

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.root / name).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_atomic(self.root / name, json.dumps(data, indent=2, sort_keys=True).encode())


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(clip_model: Any, image_size: int, target: Path) -> None:
    """Write the image tower of an open_clip model to ``target`` (raises on failure).

    The exported graph is ``encode_image`` in float32 and contiguous memory format, with a
    dynamic batch dimension; normalisation to unit length stays outside (the embedder does
    it for every backend alike).
    """
    import torch

    class _ImageTower(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(pixels)

    tower = _ImageTower(clip_model).eval()
    first = next(clip_model.parameters())
    example = torch.zeros(2, 3, image_size, image_size, device=first.device, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with torch.no_grad():  # the tracer cannot record inference-mode tensors
            # the TorchScript-based exporter: no extra packages, and it handles timm and
            # open_clip's towers; the weights stay inside the one file
            torch.onnx.export(
                tower,
                (example,),
                tmp,
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported the image tower to %s (%.1f MB)", target, target.stat().st_size / 1e6)
