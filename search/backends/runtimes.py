"""The CPU runtimes: ONNX Runtime and OpenVINO, running the exported image tower.

A runner takes the model input, float32 (N, 3, H, W), and returns the raw image features
(N, D), float32 (``waiting``: a caller waits for them, a query's photo and crops); the
embedder normalises them for every backend alike. Each is safe to call
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
    """The ONNX graph in ONNX Runtime's CPU provider (all graph optimisations on).

    Two sessions of the same graph (docs/benchmarks.md has the figures): what a caller waits
    for (``waiting``: a photo query, its crops) and single pictures run on one whose idle
    threads spin, waiting for work without sleeping (one picture every 25 ms: 7.4 ms p50
    against 12.8 ms when they sleep); other batches (the indexer) run on one whose threads
    sleep when idle, since spinning threads take the cores the indexer's decode workers
    need (the indexer on the benchmark CPU: 78-90 images/s and 20.3-22.8 core-ms per image
    against 70-76 and 25.2-27.3).
    """

    backend = "onnxruntime"

    def __init__(self, exports: ExportCache, *, precision: str, threads: int) -> None:
        if precision not in ("auto", "fp32"):
            raise ConfigError(
                f"precision {precision!r} is not offered with onnxruntime here (fp32 only); "
                "use --backend openvino for bf16/fp16"
            )
        try:
            self.session = _ort_session(exports.onnx, threads, spin=True)
            self._batch_session = _ort_session(exports.onnx, threads, spin=False)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {exports.onnx}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.precision = "fp32"

    def run(self, pixels: np.ndarray, *, waiting: bool = False) -> np.ndarray:
        pixels = _as_input(pixels)
        session = self.session if waiting or len(pixels) == 1 else self._batch_session
        return np.asarray(session.run(None, {self.input_name: pixels})[0], np.float32)


def _ort_session(onnx: Path, threads: int, *, spin: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])


class OpenVinoRunner:
    """The graph as OpenVINO IR (converted once from the ONNX file), compiled for the CPU.

    Two compiled forms of the same IR, with fixed input shapes
    (OpenVINO's kernels for a static shape are faster than its dynamic-batch ones):

    - one picture (a photo query): batch 1 with the LATENCY hint, one stream using every
      thread;
    - a batch (the indexer, a query's crops): cut into chunks of :data:`CHUNK` pictures run
      by the THROUGHPUT hint's streams in parallel (OpenVINO picks the streams; two of one
      thread each on a 2-core machine), each thread on its own chunk; the last chunk is
      padded with zeros, and a last round of chunks too small to keep every stream busy
      runs a picture at a time on the batch-1 model instead (:meth:`_on_streams`).

    Measured on the benchmark's 2-core CPU against the one dynamic-batch LATENCY model it
    replaces (docs/benchmarks.md): one picture 4.77-5.26 ms against 5.38-5.70, batches of 8
    217-223 images/s against 177-186; the same outputs.
    The precision asked for is f32 by default; bf16 where the CPU has it is an explicit
    choice (vectors within a cosine of ~0.9997 of f32; docs/benchmarks.md). The compiled
    blobs are cached by OpenVINO itself (CACHE_DIR), so a cold start reads them instead of
    compiling again. Every runner shares the process's one :func:`openvino_core`.
    """

    backend = "openvino"

    def __init__(self, exports: ExportCache, *, precision: str, threads: int) -> None:
        hint = OPENVINO_PRECISIONS.get(precision)
        if hint is None:
            raise ConfigError(f"unknown precision {precision!r} ({', '.join(OPENVINO_PRECISIONS)})")
        xml = exports.openvino_xml
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            "CACHE_DIR": str(exports.root / "openvino" / "compiled"),
        }
        if threads > 0:
            self._config["INFERENCE_NUM_THREADS"] = threads
        try:
            if not xml.is_file():
                convert_to_openvino(exports.onnx, xml)
            model = openvino_core().read_model(str(xml))
            dims = list(model.input(0).get_partial_shape())[1:]  # (C, H, W); batch is dynamic
            picture = tuple(dim.get_length() for dim in dims)
            self._single = self._compile(model, (1, *picture), "LATENCY").create_infer_request()
            self._queue = self._chunk_queue(self._compile(model, (CHUNK, *picture), "THROUGHPUT"))
            self._dim = model.output(0).get_partial_shape()[1].get_length()
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot compile {xml}: {exc}") from exc
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[hint]
        self._single_lock = threading.Lock()
        self._batch_lock = threading.Lock()

    def run(self, pixels: np.ndarray, *, waiting: bool = False) -> np.ndarray:
        """``waiting`` changes nothing here: the streams also answer a query's crops fastest."""
        pixels = _as_input(pixels)
        if len(pixels) == 1:  # never waits for another caller's batch
            return self._one(pixels)
        if len(pixels) == 0:
            return np.zeros((0, self._dim), np.float32)
        with self._batch_lock:  # the queue's streams already use every thread
            queue, outputs = self._queue
            on_streams = self._on_streams(len(pixels), len(queue))
            outputs.clear()
            for start in range(0, on_streams, CHUNK):
                chunk = pixels[start : start + CHUNK]
                if len(chunk) < CHUNK:  # the shape is static: pad the last chunk with zeros
                    pad = np.zeros((CHUNK - len(chunk), *chunk.shape[1:]), chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                queue.start_async({0: chunk}, start)
            queue.wait_all()
            if len(outputs) != -(-on_streams // CHUNK):
                raise ModelError("OpenVINO returned fewer chunks than it was given")
            parts = [outputs[k] for k in sorted(outputs)]
            parts.extend(self._one(pixels[i : i + 1]) for i in range(on_streams, len(pixels)))
            return np.concatenate(parts)[: len(pixels)]

    def _one(self, picture: np.ndarray) -> np.ndarray:
        with self._single_lock:  # one request at a time: it uses every thread
            return np.array(self._single.infer({0: picture})[0], np.float32, copy=True)

    @staticmethod
    def _on_streams(pictures: int, streams: int) -> int:
        """How many of ``pictures`` go to the streams in chunks; the rest run one at a time
        on every thread: the pictures of a last round of chunks too small to give every
        stream one (it would leave a stream idle for a whole chunk). On the 2-core benchmark
        CPU one picture takes 5.2-6.5 ms on both threads and a chunk 17.8 ms on one: 2
        pictures 13 ms against 17.8, a query's 10 views 48 against 52.5 ms."""
        chunks = -(-pictures // CHUNK)
        if chunks % streams == 0:
            return pictures
        return min(pictures, (chunks // streams) * streams * CHUNK)

    def _compile(self, model: Any, shape: tuple[int, ...], hint: str) -> Any:
        model = model.clone()
        model.reshape(list(shape))
        return openvino_core().compile_model(
            model, "CPU", {**self._config, "PERFORMANCE_HINT": hint}
        )

    @staticmethod
    def _chunk_queue(compiled: Any) -> tuple[Any, dict[int, np.ndarray]]:
        """An AsyncInferQueue of the streams' optimal size, and where its outputs land."""
        import openvino as ov

        queue = ov.AsyncInferQueue(
            compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        )
        outputs: dict[int, np.ndarray] = {}

        def keep(request: Any, start: int) -> None:  # on OpenVINO's thread; read after wait_all
            outputs[start] = np.array(request.get_output_tensor(0).data, np.float32, copy=True)

        queue.set_callback(keep)
        return queue, outputs


CHUNK = 2
"""Pictures per request on the batch path: on one thread of the benchmark CPU, OpenVINO's
static-shape model costs 9.2, 8.6, 9.1 and 10.1 core-ms per picture at 1, 2, 4 and 8
(10.2 for the dynamic batch of 8 it had before); a chunk of 2 wastes at most one padded
picture per batch."""


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
