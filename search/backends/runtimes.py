"""The CPU runtimes: ONNX Runtime and OpenVINO, running the exported image tower.

A runner takes the model input, float32 (N, 3, H, W), and returns the raw image features
(N, D), float32; the embedder normalises them for every backend alike. Each is safe to call
from several threads (a server's request threads). Importing this module imports neither
runtime; building a runner imports its own.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from .export import ExportCache

log = logging.getLogger(__name__)

# precision setting -> OpenVINO's inference precision hint ("auto": f32, the default here)
OPENVINO_PRECISIONS = {"auto": "f32", "fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OnnxRuntimeRunner:
    """The ONNX graph in ONNX Runtime's CPU provider (all graph optimisations on)."""

    backend = "onnxruntime"

    def __init__(self, exports: ExportCache, *, precision: str, threads: int) -> None:
        import onnxruntime as ort

        if precision not in ("auto", "fp32"):
            raise ConfigError(
                f"precision {precision!r} is not offered with onnxruntime here (fp32 only); "
                "use --backend openvino for bf16/fp16"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(exports.onnx), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {exports.onnx}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.precision = "fp32"

    def run(self, pixels: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: _as_input(pixels)})[0]
        return np.asarray(out, np.float32)


class OpenVinoRunner:
    """The graph as OpenVINO IR (converted once from the ONNX file), compiled for the CPU.

    Compiled with the LATENCY hint (one stream using every thread: the batches arrive one at
    a time) and the precision asked for: f32 by default; bf16 where the CPU has it is an
    explicit choice (vectors within a cosine of ~0.9997 of f32; docs/benchmarks.md).
    The compiled blob is cached by OpenVINO itself (CACHE_DIR), so a cold start reads it
    instead of compiling again. Every runner shares the process's one :func:`openvino_core`.
    """

    backend = "openvino"

    def __init__(self, exports: ExportCache, *, precision: str, threads: int) -> None:
        hint = OPENVINO_PRECISIONS.get(precision)
        if hint is None:
            raise ConfigError(f"unknown precision {precision!r} ({', '.join(OPENVINO_PRECISIONS)})")
        xml = exports.openvino_xml
        try:
            if not xml.is_file():
                convert_to_openvino(exports.onnx, xml)
            config: dict[str, Any] = {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": hint,
                "CACHE_DIR": str(exports.root / "openvino" / "compiled"),
            }
            if threads > 0:
                config["INFERENCE_NUM_THREADS"] = threads
            self.compiled = openvino_core().compile_model(str(xml), "CPU", config)
        except ConfigError:
            raise
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot compile {xml}: {exc}") from exc
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[hint]
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:  # one infer request, one batch at a time (it uses every thread)
            result = self._request.infer({0: _as_input(pixels)})
            return np.array(result[0], np.float32, copy=True)


_core: Any = None
_core_lock = threading.Lock()


def openvino_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and never released.

    OpenVINO's CPU plugin swaps in its own alternate signal stack (``sigaltstack``) on the
    thread that loads it and, when its Core is destroyed, puts back the stack it found and
    unmaps its own. With one Core per runner, Cores destroyed in another order than they were
    made leave a thread's signal stack pointing at unmapped memory, and the next Python signal
    handler there (CPython installs them with SA_ONSTACK: a DataLoader's SIGCHLD, a timeout's
    SIGALRM) kills the process with SIGSEGV. One Core that lives as long as the process keeps
    that stack mapped (tests/search/test_openvino_core.py reproduces the crash).
    """
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def convert_to_openvino(onnx_path: Path, xml: Path) -> None:
    """ONNX -> OpenVINO IR, float32 weights kept as they are (no fp16 compression)."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.with_name(f".{xml.stem}-{os.getpid()}-{threading.get_ident()}.xml")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
    tmp.replace(xml)
    log.info("converted %s to OpenVINO IR", onnx_path)


def _as_input(pixels: Any) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):  # a torch tensor from the indexer's loader
        pixels = pixels.detach().cpu().numpy()
    return np.ascontiguousarray(pixels, dtype=np.float32)


RUNNERS = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}
