"""Per-device defaults for batch size, DataLoader workers, torch threads and pipeline stages.

The figures behind these defaults come from ``benchmarks/bench_indexing.py`` (its sweeps and
ablation; see docs/benchmarks.md). On the 2-core CPU, with glibc's allocator tuned for
inference (``search/allocator.py``) and channels-last convolutions, EfficientNet-Lite0's
forward ran fastest at batch 8-32 with 2 torch threads (~50-57 img/s vs ~28-32 with one),
and the indexer end to end gained 30-40 % from the second thread in every cell of its sweep;
batch 8-16 and 1-2 decode workers were within noise, and one worker costs ~600 MB less.
Above 2 cores the split (a worker per 4 cores, the rest to the model) and the CUDA defaults
(large batches, several decode workers, one torch thread) are extrapolated, not measured:
re-run the benchmark on such a machine and set ``VSEARCH_BATCH_SIZE`` / ``_WORKERS`` /
``_THREADS`` from its sweep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from search.config import Settings


@dataclass(frozen=True)
class Tuning:
    """How the indexing pipeline runs; every stage can be switched off for an ablation.

    draft: decode JPEGs at a reduced scale (PIL draft) before the resize.
    batched_preprocess: workers ship uint8 crops; float conversion and normalisation run
        once per batch on the model's device.
    async_writes: upsert into Milvus in a writer thread while the next batch embeds.
    fast_resize: resize and crop in torch (vectorised) rather than PIL: within 2 grey levels
        of the model's own transform; off for bit-identical pixels.
    device_decode: decode JPEGs on the model's device (torchvision / nvJPEG); opt-in.
    pin_memory: page-locked batches for non-blocking host-to-GPU copies (CUDA only).
    """

    batch_size: int
    workers: int
    threads: int
    draft: bool = True
    batched_preprocess: bool = True
    async_writes: bool = True
    fast_resize: bool = True
    device_decode: bool = False
    pin_memory: bool = True


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def device_defaults(device: str, cores: int | None = None) -> Tuning:
    """The measured default for ``device`` on a machine with ``cores`` usable cores."""
    cores = cores or cpu_count()
    if device.startswith("cuda"):
        return Tuning(batch_size=128, workers=min(8, max(2, cores - 1)), threads=1)
    workers = 1 if cores <= 4 else min(4, cores // 4)
    # On 2 cores the model keeps both: the worker decodes in the gaps of its threads.
    threads = cores if cores <= 2 else cores - workers
    return Tuning(batch_size=8, workers=workers, threads=threads)


def choose(settings: Settings, device: str) -> Tuning:
    """Settings win when set; otherwise the measured default for ``device``."""
    base = device_defaults(device)
    return Tuning(
        batch_size=settings.indexing.batch_size or base.batch_size,
        workers=base.workers if settings.indexing.workers < 0 else settings.indexing.workers,
        threads=settings.indexing.threads or base.threads,
        draft=base.draft,
        batched_preprocess=base.batched_preprocess,
        async_writes=base.async_writes,
        fast_resize=base.fast_resize,
        device_decode=base.device_decode,
        pin_memory=base.pin_memory,
    )
