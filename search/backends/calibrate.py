"""``backend=auto`` on a CPU: measure each backend briefly once per machine, keep the fastest.

Each candidate embeds a few batches of 8 (the indexer's CPU batch; a photo query with crops
is 10 views) after a warm-up; the images per second and the winner are stored in the model's
export folder under a key naming this machine (CPU model, usable cores, thread count,
precision and the runtimes' versions), so every later process - the indexer, the server,
``vsearch search`` - reads the choice instead of measuring again.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from importlib import metadata

import numpy as np

from .export import ExportCache

log = logging.getLogger(__name__)

CALIBRATION_NAME = "calibration.json"
BATCH = 8
SECONDS = 1.0  # measured time per backend, after a warm-up batch


def machine_key(threads: int, precision: str) -> str:
    """What the measurement depends on: this CPU, its cores, the threads, the libraries."""
    versions = []
    for dist in ("torch", "onnxruntime", "openvino"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}=none")
    return "|".join([cpu_model(), f"cores={_cores()}", f"threads={threads}", precision, *versions])


def cached_choice(exports: ExportCache, key: str) -> str | None:
    entry = exports.read_json(CALIBRATION_NAME).get(key)
    return entry.get("winner") if isinstance(entry, dict) else None


def calibrate(
    exports: ExportCache,
    key: str,
    candidates: Mapping[str, Callable[[np.ndarray], object]],
    image_size: int,
) -> str:
    """Time each candidate on a batch of ``BATCH`` images; record and return the fastest."""
    pixels = np.random.default_rng(0).standard_normal((BATCH, 3, image_size, image_size))
    pixels = pixels.astype(np.float32)
    rates: dict[str, float] = {}
    for name, run in candidates.items():
        try:
            rates[name] = _rate(run, pixels)
        except Exception as exc:  # a backend that fails here is simply not chosen
            log.warning("calibration: %s failed (%s); not chosen", name, exc)
    if not rates:
        return "torch"
    winner = max(rates, key=lambda n: rates[n])
    data = exports.read_json(CALIBRATION_NAME)
    data[key] = {
        "winner": winner,
        "images_per_s": {n: round(r, 1) for n, r in rates.items()},
        "batch": BATCH,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    exports.write_json(CALIBRATION_NAME, data)
    summary = ", ".join(f"{n} {r:.0f}" for n, r in sorted(rates.items(), key=lambda x: -x[1]))
    log.info("backend auto: measured images/s at batch %d: %s -> %s", BATCH, summary, winner)
    return winner


def _rate(run: Callable[[np.ndarray], object], pixels: np.ndarray) -> float:
    run(pixels)  # warm-up: first-call allocations, lazy kernels
    done, start = 0, time.perf_counter()
    while True:
        run(pixels)
        done += len(pixels)
        elapsed = time.perf_counter() - start
        if elapsed >= SECONDS and done >= 2 * len(pixels):
            return done / elapsed


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (what measurements made on this machine are keyed by)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
