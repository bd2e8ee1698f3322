"""The one source of truth for embeddings: indexer and query path share this class.

An :class:`Embedder` loads any open_clip model (a built-in name plus pretrained tag, which
open_clip downloads as usual; a ``local-dir:`` folder; or the offline default
``builtin:efficientnet-lite0``), takes its preprocessing from the model, and returns
L2-normalised float32 vectors. It runs in channels-last memory format (measured faster on
the CPU, docs/benchmarks.md; the usual choice on CUDA); on CUDA it adds autocast (bf16 where supported, else fp16) and non-blocking
copies from pinned memory; on the CPU it tunes glibc's allocator (:mod:`search.allocator`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .allocator import keep_freed_memory
from .builtin_model import BUILTIN_PREFIX, builtin_model_dir
from .errors import ModelError, TextSearchUnsupported
from .images import open_image
from .model_folder import CONFIG_NAME, LOCAL_DIR_PREFIX

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a model: what a collection records and what queries must match."""

    name: str
    pretrained: str
    checkpoint: str
    dim: int
    has_text: bool
    image_size: int
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the embedding space: two models with the same key are interchangeable."""
        return f"{self.name}|{self.pretrained}|{self.checkpoint}|{self.dim}"

    @property
    def slug(self) -> str:
        """A short, collection-name-safe identifier of :attr:`key`."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        tag = f" ({self.pretrained})" if self.pretrained else ""
        ck = f" checkpoint {self.checkpoint}" if self.checkpoint else ""
        return f"{self.name}{tag}{ck}, {self.dim}-d"


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA device is available")
    return device


def file_digest(path: Path) -> str:
    """sha256 of a weights file (first 16 hex digits), cached beside it by size and mtime."""
    stat = path.stat()
    sidecar = path.with_name(path.name + ".sha256")
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cached_stamp, digest = sidecar.read_text().split()
        if cached_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    try:
        sidecar.write_text(f"{stamp} {digest}\n")
    except OSError:
        log.debug("cannot cache the digest of %s", path)
    return digest


class Embedder:
    """Embeds images (and text, when the model has a real text tower) into unit vectors."""

    def __init__(
        self,
        model: str,
        pretrained: str = "",
        *,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        import open_clip
        import torch

        self.device = resolve_device(device)
        if self.device == "cpu":
            keep_freed_memory()  # CPU forwards reuse their activation pages (allocator.py)
        cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "vsearch"
        open_clip_name, folder, has_text = self._locate(model, pretrained, cache)
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                open_clip_name,
                pretrained=None if folder else (pretrained or None),
                device="cpu",
                cache_dir=str(cache / "open_clip"),
            )
        except Exception as exc:
            raise ModelError(f"cannot load model {model!r} {pretrained!r}: {exc}") from exc
        clip.eval()
        # channels-last convolutions: faster on CUDA and, with the allocator tuned, on the
        # CPU too (EfficientNet-Lite0 batch 8, 2 threads: ~51 vs ~43 img/s; benchmarks.md)
        self._model = clip.to(self.device).to(memory_format=torch.channels_last)
        self._tokenizer = open_clip.get_tokenizer(open_clip_name) if has_text else None
        self.preprocess: Callable[[Image.Image], torch.Tensor] = preprocess
        self._autocast_dtype = self._pick_precision(precision)
        size = _image_size(clip)
        checkpoint = ""
        if folder is not None:
            weights = sorted(folder.glob("open_clip_model.safetensors")) or sorted(
                folder.glob("*.safetensors")
            ) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt"))
            checkpoint = file_digest(weights[0]) if weights else ""
        dim = int(self.embed_tensors(torch.zeros(1, 3, size, size)).shape[1])
        self.info = ModelInfo(
            # a local folder is recorded by its absolute path: a searcher started from
            # another working directory must load the same model from the provenance
            name=f"{LOCAL_DIR_PREFIX}{folder}" if model.startswith(LOCAL_DIR_PREFIX) else model,
            pretrained="" if folder else pretrained,
            checkpoint=checkpoint,
            dim=dim,
            has_text=has_text,
            image_size=size,
            preprocess=_preprocess_summary(clip),
        )
        log.info("loaded model %s on %s", self.info.describe(), self.device)

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.model,
            settings.pretrained,
            device=settings.device,
            precision=settings.precision,
            cache_dir=settings.cache_dir,
        )

    @staticmethod
    def _locate(model: str, pretrained: str, cache: Path) -> tuple[str, Path | None, bool]:
        """Return (open_clip model name, local folder or None, has a real text tower)."""
        if model.startswith(BUILTIN_PREFIX):
            folder = builtin_model_dir(cache, model[len(BUILTIN_PREFIX) :])
            return f"{LOCAL_DIR_PREFIX}{folder}", folder, False
        if model.startswith(LOCAL_DIR_PREFIX):
            folder = Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser().resolve()
            config = folder / CONFIG_NAME
            if not config.is_file():
                raise ModelError(f"model folder {folder} has no {CONFIG_NAME}")
            try:
                meta = json.loads(config.read_text()).get("vsearch", {})
            except json.JSONDecodeError as exc:
                raise ModelError(f"{config} is not valid JSON: {exc}") from exc
            return f"{LOCAL_DIR_PREFIX}{folder}", folder, bool(meta.get("has_text", True))
        if not pretrained:
            raise ModelError(
                f"model {model!r} needs a pretrained tag (e.g. --pretrained laion2b_s34b_b79k); "
                "random weights make meaningless embeddings"
            )
        return model, None, True

    def _pick_precision(self, precision: str) -> Any:
        import torch

        if precision == "fp32" or not self.device.startswith("cuda"):
            return None
        if precision == "fp16":
            return torch.float16
        if precision in ("bf16", "auto"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        raise ModelError(f"unknown precision {precision!r} (auto, fp32, fp16, bf16)")

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def has_text(self) -> bool:
        return self.info.has_text

    @property
    def torch_model(self) -> Any:
        """The underlying open_clip model (for evaluation and fine-tuning jobs)."""
        return self._model

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a batch of already preprocessed images (N, 3, H, W)."""
        import torch

        with torch.inference_mode():
            cuda = self.device.startswith("cuda")
            batch = batch.to(self.device, non_blocking=cuda).contiguous(
                memory_format=torch.channels_last
            )
            if self._autocast_dtype is not None:
                with torch.autocast("cuda", dtype=self._autocast_dtype):
                    feats = self._model.encode_image(batch)
            else:
                feats = self._model.encode_image(batch)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(
        self, images: Sequence[Image.Image | bytes | str | Path], batch_size: int = 8
    ) -> np.ndarray:
        """Decode (safely), preprocess and embed images; raises ImageError on a bad one."""
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            chunk = [
                self.preprocess(open_image(im, draft_size=self.info.image_size))
                for im in images[start : start + batch_size]
            ]
            out.append(self.embed_tensors(torch.stack(chunk)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries; raises TextSearchUnsupported for image-only models."""
        import torch

        if self._tokenizer is None:
            raise TextSearchUnsupported(
                f"model {self.info.name} is image-only (no trained text tower): "
                "search by photo or by catalog id instead"
            )
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            feats = self._model.encode_text(tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


def _image_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    if isinstance(size, tuple | list):
        size = max(size)
    return int(size)


def _preprocess_summary(model: Any) -> dict[str, Any]:
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(cfg).items()}
