"""A lossy precision (bf16, fp16) runs only after it passed a recall check on the catalog.

On a CPU every backend gives fp32 vectors by default. OpenVINO can run the model in bf16
(or fp16) where the CPU has it: about 1.8x cheaper per image on the benchmark CPU, but the
vectors are other vectors (cosine to fp32 down to ~0.99), and how much that changes what a
shopper sees depends on the catalog: near-duplicate products are reordered first. So a
lossy precision is offered only with a measurement on the user's own images
(``vsearch check-precision CATALOG --precision bf16``): a sample of the catalog is embedded
in fp32 and in the candidate precision, and for each sampled image its ``k`` nearest other
sampled images are compared (neighbour recall@k: the share of fp32's top k the candidate
also returns). The result is kept in the model's export folder, per backend, precision, CPU
model and runtime version; the embedder loads a lossy runner only when such a record says it
passed (:func:`require_passed`), and says what to run otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata

import numpy as np

from ..errors import ConfigError
from .calibrate import cpu_model
from .export import ExportCache

log = logging.getLogger(__name__)

CHECKS_NAME = "precision-checks.json"
LOSSY = ("bf16", "fp16")
DEFAULT_K = 10
DEFAULT_MIN_RECALL = 0.95
DEFAULT_IMAGES = 500


@dataclass(frozen=True)
class PrecisionCheck:
    """One measurement of a lossy precision against fp32 on a sample of a catalog."""

    backend: str
    precision: str
    images: int
    k: int
    neighbour_recall: float  # mean share of each image's fp32 top k kept by the candidate
    cos_min: float
    cos_mean: float
    min_recall: float
    fp32_core_ms: float  # CPU time per image of each forward pass, on this sample
    candidate_core_ms: float
    catalog: str
    checked: str  # UTC

    @property
    def passed(self) -> bool:
        return self.neighbour_recall >= self.min_recall

    def describe(self) -> str:
        verdict = "passed" if self.passed else f"below the required {self.min_recall:.3f}"
        return (
            f"{self.precision} on {self.backend}: neighbour recall@{self.k} "
            f"{self.neighbour_recall:.3f} ({verdict}) on {self.images} images of "
            f"{self.catalog}, cosine to fp32 min {self.cos_min:.4f} mean {self.cos_mean:.4f}, "
            f"{self.fp32_core_ms:.1f} -> {self.candidate_core_ms:.1f} core-ms per image"
        )


def check_key(backend: str, precision: str) -> str:
    """What a check's result depends on: the precision, the runtime and this CPU."""
    try:
        version = metadata.version(backend)
    except metadata.PackageNotFoundError:
        version = "none"
    return "|".join([backend, precision, f"{backend}={version}", cpu_model()])


def neighbour_recall(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean over the rows of the share of each row's ``k`` nearest other rows (inner
    product, as the collections search) under ``reference`` that ``candidate`` also ranks
    among its ``k`` nearest. 1.0: the same neighbours."""
    n = len(reference)
    if n != len(candidate) or n < 2:
        raise ValueError("neighbour recall needs the same rows, at least two")
    k = min(k, n - 1)
    kept = 0
    for start in range(0, n, 256):  # (256, n) similarities at a time: bounded memory
        rows = slice(start, min(n, start + 256))
        tops = []
        for vecs in (reference, candidate):
            sims = vecs[rows] @ vecs.T
            sims[np.arange(sims.shape[0]), np.arange(rows.start, rows.stop)] = -np.inf
            tops.append(np.argpartition(-sims, k - 1, axis=1)[:, :k])
        kept += sum(len(np.intersect1d(a, b)) for a, b in zip(*tops, strict=True))
    return kept / (n * k)


def measure(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    *,
    backend: str,
    precision: str,
    catalog: str,
    k: int = DEFAULT_K,
    min_recall: float = DEFAULT_MIN_RECALL,
    batch: int = 8,
) -> PrecisionCheck:
    """Embed ``pixels`` with both (each returns unit vectors), a batch at a time; compare."""
    if len(pixels) < 2:
        raise ConfigError("a precision check needs at least 2 images that decode")
    vectors, costs = [], []
    for run in (reference, candidate):
        run(pixels[:batch])  # warm-up: first-call allocations
        t0, out = time.process_time(), []
        for start in range(0, len(pixels), batch):
            out.append(run(pixels[start : start + batch]))
        costs.append(1000 * (time.process_time() - t0) / len(pixels))
        vectors.append(np.concatenate(out))
    cos = (vectors[0] * vectors[1]).sum(axis=1)
    return PrecisionCheck(
        backend=backend,
        precision=precision,
        images=len(pixels),
        k=min(k, len(pixels) - 1),
        neighbour_recall=round(neighbour_recall(vectors[0], vectors[1], k), 4),
        cos_min=round(float(cos.min()), 5),
        cos_mean=round(float(cos.mean()), 5),
        min_recall=min_recall,
        fp32_core_ms=round(costs[0], 2),
        candidate_core_ms=round(costs[1], 2),
        catalog=catalog,
        checked=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def record(exports: ExportCache, check: PrecisionCheck) -> None:
    """Keep ``check`` in the model's export folder (the last one per key wins)."""
    data = exports.read_json(CHECKS_NAME)
    data[check_key(check.backend, check.precision)] = asdict(check)
    exports.write_json(CHECKS_NAME, data)


def recorded(exports: ExportCache, backend: str, precision: str) -> PrecisionCheck | None:
    entry = exports.read_json(CHECKS_NAME).get(check_key(backend, precision))
    try:
        return PrecisionCheck(**entry) if isinstance(entry, dict) else None
    except TypeError:  # written by another version: as good as none
        return None


def require_passed(exports: ExportCache, backend: str, precision: str) -> PrecisionCheck:
    """The passing check of ``precision`` on ``backend`` here, or :class:`ConfigError`."""
    check = recorded(exports, backend, precision)
    if check is not None and check.passed:
        log.info("precision %s", check.describe())
        return check
    why = (
        f"its last check here: {check.describe()}"
        if check is not None
        else "it has not been checked on this machine"
    )
    raise ConfigError(
        f"precision {precision} changes the vectors, so it runs only after a recall check "
        f"on your catalog has passed ({why}). Run: vsearch check-precision CATALOG "
        f"--precision {precision} --backend {backend}"
    )
