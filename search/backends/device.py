"""Which device the model runs on, answered without importing torch where possible."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ModelError


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch.

    Without an NVIDIA (or ROCm) device on a Linux machine, ``auto`` and ``cpu`` answer
    without importing torch (seconds saved on every CLI query).
    """
    if device == "cpu" or (device == "auto" and not _gpu_possible()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA device is available")
    return device


def _gpu_possible() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # no cheap test: ask torch
    nvidia = Path("/proc/driver/nvidia/gpus")
    if nvidia.is_dir() and any(nvidia.iterdir()):
        return True
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
