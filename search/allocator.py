"""Keep freed memory in the process so CPU inference stops paying page faults.

glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB)
with fresh pages from ``mmap`` and gives them back with ``munmap`` on free. A CPU forward
pass allocates and frees its activations layer by layer; at batch 8 EfficientNet-Lite0's
largest is ~40 MB, above any threshold, so every layer of every batch faulted in and
zeroed new pages: a quarter of the forward's CPU time was system time, and batches above 4
ran slower per image than batch 4 (docs/benchmarks.md). Serving large blocks from the heap
(``M_MMAP_MAX = 0``) and trimming the heap only past ``trim_mb`` of free memory at its top
(``M_TRIM_THRESHOLD``) reuses the same pages batch after batch.

The setting is process-wide and irreversible, so it applies once, when a model is loaded on
the CPU (:class:`search.embedder.Embedder`); ``Settings.model.malloc_tuning`` (env
``VSEARCH_MALLOC_TUNING=0``) leaves the allocator alone: ``Embedder.from_settings`` passes it
to :func:`allow`. On a libc other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
DEFAULT_TRIM_MB = 512

_applied: bool | None = None
_allowed = True


def allow(enabled: bool) -> None:
    """Whether a model loaded from now on may tune the allocator (``Settings.model.malloc_tuning``)."""
    global _allowed
    _allowed = enabled


def keep_freed_memory(trim_mb: int = DEFAULT_TRIM_MB) -> bool:
    """Tune glibc's malloc for repeated large allocations; True when it is (now) tuned."""
    global _applied
    if _applied is not None:
        return _applied
    if not _allowed:
        log.info("malloc_tuning is off: glibc's allocator keeps its defaults")
        return False
    _applied = False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, trim_mb * 1024 * 1024) == 1 and ok
    except (OSError, AttributeError) as exc:
        log.debug("mallopt unavailable: %s", exc)
        return False
    _applied = ok
    log.debug("glibc malloc tuned for inference (mmap off, trim at %d MB): %s", trim_mb, ok)
    return ok
