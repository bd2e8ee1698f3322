"""The one source of truth for embeddings: indexer and query path share this class.

An :class:`Embedder` loads any open_clip model (a built-in name plus pretrained tag, which
open_clip downloads as usual; a ``local-dir:`` folder; or the offline default
``builtin:efficientnet-lite0``), takes its preprocessing from the model, and returns
L2-normalised float32 vectors. Its image tower runs on an inference backend
(:mod:`search.backends`): PyTorch itself (channels-last, autocast on CUDA), or the tower
exported once to ONNX and run by ONNX Runtime or OpenVINO on the CPU. ``backend="auto"``
takes torch on CUDA and otherwise the fastest backend measured on this machine.

With an exported backend already cached, building an embedder imports neither torch nor
open_clip: the model's record comes from the export's manifest, and photos are preprocessed
by :mod:`search.images.preprocess` (PIL + numpy, equal to open_clip's transform). PyTorch loads
on demand: for text queries, ``torch_model`` and ``preprocess`` (the indexer's loaders).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import allocator
from .backends import BACKENDS, RUNTIMES, installed, precision_check
from .backends.calibrate import cached_choice, calibrate, machine_key
from .backends.device import cores, resolve_device
from .backends.export import ExportCache, export_onnx, identity
from .backends.precision_check import LOSSY, require_passed
from .backends.torch_model import TorchModel
from .errors import ConfigError, TextSearchUnsupported
from .images import Preprocess, open_image
from .model_folder import file_digest, locate

if TYPE_CHECKING:
    from PIL import Image

    from .config import Settings

__all__ = ["Embedder", "ModelInfo", "file_digest", "resolve_device"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a model: what a collection records and what queries must match.

    backend / precision say how the vectors were computed; they are recorded but are not
    part of :attr:`key`: every backend gives the same vectors, so a collection built with one
    may be searched with another.
    """

    name: str
    pretrained: str
    checkpoint: str
    dim: int
    has_text: bool
    image_size: int
    preprocess: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    precision: str = ""

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
        backend: str = "torch",
        threads: int = 0,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
        if backend in RUNTIMES and not installed(backend):
            log.warning(
                "backend %s is not installed (pip install %s); using torch", backend, backend
            )
            backend = "torch"
        cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "vsearch"
        self._cache, self._precision = cache, precision
        # the setting every PyTorch forward pass of this model follows (search.images.precision)
        self.precision_setting = precision
        self._threads = threads or cores()
        self._source = src = locate(model, pretrained, cache)
        ident = identity(src.name, src.pretrained, src.checkpoint, src.config_text)
        self._exports = ExportCache(cache, ident)
        self._torch: TorchModel | None = None
        self._runner: Any = None
        self._transform: Callable[[Image.Image], Any] | None = None
        self.device = resolve_device(device)
        choice = self._choose(backend)
        record = self._cached_runner(choice) if choice in RUNTIMES else None
        if record is None:
            record = self._load_torch()
            if choice == "calibrate":
                choice = self._calibrate()
            elif choice in RUNTIMES:
                self._runner = self._export_and_load(choice)
        if self._runner is None:
            choice = "torch"
        else:
            self.device = "cpu"  # the exported graph runs on the CPU runtimes
        precision_used = self._runner.precision if self._runner else self._torch_model().precision
        self.backend = choice
        self.info = ModelInfo.from_dict({**record, "backend": choice, "precision": precision_used})
        self._pre = Preprocess.of(self.info.preprocess, self.info.image_size)
        log.info(
            "loaded model %s on %s (%s, %s)",
            self.info.describe(),
            self.device,
            choice,
            precision_used,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str | None = None, pretrained: str | None = None
    ) -> Embedder:
        """The one way an embedder is built from settings (``model``: another model than
        ``settings.model.model``, e.g. the one a collection records, with the same device,
        precision, backend and threads)."""
        allocator.allow(settings.model.malloc_tuning)
        return cls(
            settings.model.model if model is None else model,
            settings.model.pretrained if pretrained is None else pretrained,
            device=settings.model.device,
            precision=settings.model.precision,
            cache_dir=settings.model.cache_dir,
            backend=settings.model.backend,
            threads=settings.indexing.threads,
        )

    # -- choosing and loading a backend -------------------------------------------------
    def _choose(self, backend: str) -> str:
        """The backend to load, or "calibrate" when auto has not measured this machine yet."""
        if backend != "auto":
            if backend in RUNTIMES and self.device != "cpu":
                log.info("backend %s runs on the CPU (device %s is not used)", backend, self.device)
            return backend
        if self.device != "cpu":
            return "torch"  # torch + autocast on CUDA
        if self._precision in LOSSY and installed("openvino"):
            return "openvino"  # the one CPU backend that offers it (after its recall check)
        return cached_choice(self._exports, self._machine_key()) or "calibrate"

    def _machine_key(self) -> str:
        return machine_key(self._threads, self._precision)

    def _cached_runner(self, backend: str) -> dict[str, Any] | None:
        """The model record from an earlier export, with its runner loaded (None: not cached)."""
        manifest = self._exports.manifest()
        if manifest is None or not self._exports.onnx.is_file():
            return None
        try:
            self._runner = _make_runner(backend, self._exports, self._precision, self._threads)
        except ConfigError:
            raise
        except Exception as exc:
            log.warning("cached %s export unusable (%s); exporting again", backend, exc)
            return None
        return dict(manifest["info"])

    def _load_torch(self) -> dict[str, Any]:
        """Load the model in PyTorch; return its record (and keep it in the export manifest)."""
        tm = self._torch_model()
        dim = int(
            tm.encode_images(np.zeros((1, 3, tm.image_size, tm.image_size), np.float32)).shape[1]
        )
        src = self._source
        self._record: dict[str, Any] = {
            "name": src.name,
            "pretrained": src.pretrained,
            "checkpoint": src.checkpoint,
            "dim": dim,
            "has_text": src.has_text,
            "image_size": tm.image_size,
            "preprocess": tm.preprocess_record,
        }
        return self._record

    def _torch_model(self) -> TorchModel:
        if self._torch is None:
            src = self._source
            device = self.device if self._runner is None else "cpu"
            self._torch = TorchModel(
                src.open_clip_name,
                src.pretrained,
                local=src.folder is not None,
                has_text=src.has_text,
                device=device,
                precision=self._precision,
                cache=self._cache,
            )
        return self._torch

    def _export_and_load(self, backend: str) -> Any:
        """Export once and load ``backend``; on any failure, one warning and None (torch)."""
        tm = self._torch_model()
        try:
            if not self._exports.onnx.is_file():
                export_onnx(tm.model, tm.image_size, self._exports.onnx)
            runner = _make_runner(backend, self._exports, self._precision, self._threads)
            self._exports.write_manifest(self._record)
            return runner
        except ConfigError:
            raise
        except Exception as exc:
            log.warning(
                "backend %s unavailable for %s (%s: %s); using torch",
                backend,
                self._source.name,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            return None

    def _calibrate(self) -> str:
        """Measure torch and every installed runtime here; keep the fastest loaded."""
        runners: dict[str, Any] = {}
        for name in (n for n in RUNTIMES if installed(n)):
            try:
                runner = self._export_and_load(name)
            except ConfigError as exc:  # e.g. a precision this runtime does not offer
                log.info("calibration: %s skipped (%s)", name, exc)
                continue
            if runner is not None:
                runners[name] = runner
            elif not self._exports.onnx.is_file():
                break  # the export itself failed (said once): torch it is
        tm = self._torch_model()
        candidates = {"torch": tm.encode_images, **{n: r.run for n, r in runners.items()}}
        winner = calibrate(self._exports, self._machine_key(), candidates, tm.image_size)
        self._runner = runners.get(winner)
        return winner

    # -- public API ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def has_text(self) -> bool:
        return self.info.has_text

    @property
    def exports(self) -> ExportCache:
        """This model's export folder (ONNX, OpenVINO IR, calibration and precision records),
        shared by every backend of the model; written by the exported runtimes."""
        return self._exports

    @property
    def torch_model(self) -> Any:
        """The underlying open_clip model (for evaluation and fine-tuning jobs)."""
        return self._torch_model().model

    @property
    def preprocess(self) -> Callable[[Image.Image], Any]:
        """open_clip's own image transform (PIL -> tensor) for this model (imports torch)."""
        if self._torch is not None:
            return self._torch.preprocess
        if self._transform is None:
            from open_clip.transform import image_transform

            p = self.info.preprocess
            self._transform = image_transform(
                self.info.image_size,
                is_train=False,
                mean=tuple(p["mean"]) if p.get("mean") else None,
                std=tuple(p["std"]) if p.get("std") else None,
                resize_mode=p.get("resize_mode"),
                interpolation=p.get("interpolation"),
                fill_color=int(p.get("fill_color", 0)),
            )
        return self._transform

    @property
    def runtime_preprocess(self) -> Preprocess | None:
        """The torch-free transform (PIL + numpy) this embedder's exported runtime uses for
        photos; None on the PyTorch backend, or for a transform that
        :mod:`search.images.preprocess` does not reproduce (open_clip's is used then)."""
        return self._pre if self._runner is not None else None

    def embed_tensors(self, batch: Any, *, waiting: bool = False) -> np.ndarray:
        """Embed a batch of already preprocessed images (N, 3, H, W; a tensor or an array).

        ``waiting``: someone waits for this batch (a query's photo and its crops), so a
        runtime answers it the fastest way rather than the way that leaves the most CPU to
        other work (the indexer's decode workers); see :mod:`search.backends.runtimes`.
        """
        if self._runner is None:
            return self._torch_model().encode_images(batch)
        return _normalise(self._runner.run(batch, waiting=waiting))

    def embed_images(
        self, images: Sequence[Image.Image | bytes | str | Path], batch_size: int = 8
    ) -> np.ndarray:
        """Decode (safely), preprocess and embed images; raises ImageError on a bad one."""
        out = []
        size, pre = self.info.image_size, self.runtime_preprocess
        for start in range(0, len(images), batch_size):
            pics = [open_image(im, draft_size=size) for im in images[start : start + batch_size]]
            if pre is not None:  # no torch on this path; a query: someone waits for it
                helper = _resize_helper() if self._threads > 1 else None
                out.append(self.embed_tensors(pre.batch(pics, helper=helper), waiting=True))
            else:
                import torch

                out.append(self.embed_tensors(torch.stack([self.preprocess(p) for p in pics])))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def check_precision(
        self,
        pixels: np.ndarray,
        precision: str,
        *,
        catalog: str,
        k: int = precision_check.DEFAULT_K,
        min_recall: float = precision_check.DEFAULT_MIN_RECALL,
    ) -> precision_check.PrecisionCheck:
        """Measure ``precision`` against this embedder's fp32 runtime on ``pixels`` (a
        sample of ``catalog``, resized and cropped: uint8 (N, H, W, 3), as
        :meth:`Preprocess.pixels` gives them) and record the result: what a lossy precision
        needs before it runs here."""
        pre = self.runtime_preprocess
        if self._runner is None or self._runner.precision != "fp32" or pre is None:
            raise ConfigError(
                "a precision check compares a runtime's fp32 vectors: load the model with "
                "--backend openvino --precision fp32"
            )
        from .backends.runtimes import RUNNERS

        candidate = RUNNERS[self.backend](self._exports, precision=precision, threads=self._threads)
        if candidate.precision not in LOSSY:
            raise ConfigError(f"precision {precision} is fp32 on {self.backend}: nothing to check")
        reference = self._runner
        check = precision_check.measure(
            lambda batch: _normalise(reference.run(pre.normalise(batch))),
            lambda batch: _normalise(candidate.run(pre.normalise(batch))),
            pixels,
            backend=self.backend,
            precision=candidate.precision,
            catalog=catalog,
            k=k,
            min_recall=min_recall,
        )
        precision_check.record(self._exports, check)
        return check

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries (in PyTorch); raises TextSearchUnsupported for image-only models."""
        if not self.info.has_text:
            raise TextSearchUnsupported(
                f"model {self.info.name} is image-only (no trained text tower): "
                "search by photo or by catalog id instead"
            )
        return self._torch_model().encode_texts(list(texts))


_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _resize_helper() -> ThreadPoolExecutor:
    """The process's threads that share the resizing of a query's pictures
    (:meth:`Preprocess.batch`: half of a lone picture, every other view of several), made
    on first use; one per core, so that page searches running at once do not queue behind
    each other's."""
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(cores(), thread_name_prefix="vsearch-resize")
        return _helper


def _forget_resize_helper() -> None:
    """In a forked child: the parent's helper threads do not exist there (work handed to
    them would never run), so the child makes its own on first use."""
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_resize_helper)


def _make_runner(backend: str, exports: ExportCache, precision: str, threads: int) -> Any:
    """The runtime's runner; a lossy precision (bf16, fp16) only after its recall check on
    a catalog passed here (:mod:`.backends.precision_check`)."""
    from .backends.runtimes import RUNNERS

    runner = RUNNERS[backend](exports, precision=precision, threads=threads)
    if runner.precision in LOSSY:
        require_passed(exports, backend, runner.precision)
    return runner


def _normalise(feats: np.ndarray) -> np.ndarray:
    """Unit length, as torch.nn.functional.normalize (eps 1e-12)."""
    feats = np.asarray(feats, np.float32)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return (feats / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
