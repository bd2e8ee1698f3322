"""Per-device defaults for batch size, DataLoader workers and torch threads.

The CPU figures come from ``benchmarks/bench_indexing.py`` on a 2-core machine (see
docs/benchmarks.md): EfficientNet-Lite0 runs fastest at small batches on a CPU, and one
decode worker next to the model keeps both cores busy without oversubscription.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from search.config import Settings


@dataclass(frozen=True)
class Tuning:
    batch_size: int
    workers: int
    threads: int


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose(settings: Settings, device: str) -> Tuning:
    """Settings win when set; otherwise the measured default for ``device``."""
    cores = cpu_count()
    if device.startswith("cuda"):
        batch, workers, threads = 128, min(8, max(2, cores - 1)), max(1, min(4, cores // 4))
    else:
        batch = 8
        workers = 1 if cores <= 4 else min(4, cores // 4)
        threads = max(1, cores)
    return Tuning(
        batch_size=settings.batch_size or batch,
        workers=workers if settings.workers < 0 else settings.workers,
        threads=settings.threads or threads,
    )
