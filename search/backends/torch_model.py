"""The open_clip model in PyTorch: the reference backend, the text tower and the exporter's source.

It runs in channels-last memory format (measured faster on the CPU, docs/benchmarks.md; the
usual choice on CUDA); on CUDA it adds autocast (bf16 where supported, else fp16) and
non-blocking copies from pinned memory; on the CPU it tunes glibc's allocator
(:mod:`search.allocator`). Importing this module does not import torch; building a
:class:`TorchModel` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..allocator import keep_freed_memory
from ..errors import ModelError
from ..images.precision import autocast_dtype, precision_name


class TorchModel:
    """An open_clip model loaded on ``device``; ``encode_*`` return L2-normalised float32."""

    def __init__(
        self,
        open_clip_name: str,
        pretrained: str,
        *,
        local: bool,
        has_text: bool,
        device: str,
        precision: str,
        cache: Path,
    ) -> None:
        import open_clip
        import torch

        self.device = device
        if device == "cpu":
            keep_freed_memory()  # CPU forwards reuse their activation pages (allocator.py)
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                open_clip_name,
                pretrained=None if local else (pretrained or None),
                device="cpu",
                cache_dir=str(cache / "open_clip"),
            )
        except Exception as exc:
            raise ModelError(f"cannot load model {open_clip_name!r} {pretrained!r}: {exc}") from exc
        clip.eval()
        # channels-last convolutions: faster on CUDA and, with the allocator tuned, on the
        # CPU too (EfficientNet-Lite0 batch 8, 2 threads: ~51 vs ~43 img/s; benchmarks.md)
        self.model = clip.to(device).to(memory_format=torch.channels_last)
        self.tokenizer = open_clip.get_tokenizer(open_clip_name) if has_text else None
        self.preprocess = preprocess
        self.autocast_dtype = autocast_dtype(precision, device)
        self.image_size = image_size(clip)
        self.preprocess_record = preprocess_summary(clip)

    @property
    def precision(self) -> str:
        """What the forward pass runs in: fp32, or the CUDA autocast type."""
        return precision_name(self.autocast_dtype)

    def encode_images(self, batch: Any) -> np.ndarray:
        """Embed a batch of preprocessed images (N, 3, H, W; a tensor or an array)."""
        import torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        with torch.inference_mode():
            cuda = self.device.startswith("cuda")
            batch = batch.to(self.device, non_blocking=cuda).contiguous(
                memory_format=torch.channels_last
            )
            if self.autocast_dtype is not None:
                with torch.autocast("cuda", dtype=self.autocast_dtype):
                    feats = self.model.encode_image(batch)
            else:
                feats = self.model.encode_image(batch)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.tokenizer is None:
            raise ModelError("this model has no text tower")
        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            feats = self.model.encode_text(tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


def image_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    if isinstance(size, tuple | list):
        size = max(size)
    return int(size)


def preprocess_summary(model: Any) -> dict[str, Any]:
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(cfg).items()}
