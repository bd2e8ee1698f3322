"""Shared helpers for the benchmark scripts: machine description, tables, JSON output."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path("bench-results")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def machine(device: str) -> dict[str, Any]:
    """What the figures came from: cores, CPU model, load, library versions, GPU."""
    import torch

    info: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": cores(),
        "cpu": cpu_model(),
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text (Markdown) table of ``rows`` restricted to ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = [f"\n### {title}\n", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data.setdefault("machine", {})["loadavg_end"] = loadavg()
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


def publish(path: Path, data: dict[str, Any], text: str) -> Path:
    """Save a benchmark's figures (:func:`write_json`) and print its report and where it went."""
    write_json(path, data)
    print(text)
    print(f"\nwrote {path}")
    return path


def offline() -> None:
    """Never touch the network from a benchmark (the default model is local)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def cores() -> int:
    return len(os.sched_getaffinity(0))


def setup_logging(*names: str) -> None:
    """The benchmark's own lines at INFO; pymilvus's per-RPC tracebacks off (as in the CLI)."""
    from cli.main import configure_logging

    configure_logging(verbose=False, quiet=False)
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)


def cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children) user + system CPU seconds so far."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


class GpuUtilisation:
    """Samples the GPU's utilisation with ``nvidia-smi`` while a block runs (CUDA only).

    ``summary()`` gives the mean and max percentage over the samples, or ``{}`` on a CPU
    device or where ``nvidia-smi`` is missing.
    """

    def __init__(self, device: str, interval: float = 0.5) -> None:
        self.index = device.partition(":")[2] or "0"
        self.interval = interval
        self.samples: list[float] = []
        self.enabled = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilisation:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        cmd = ["nvidia-smi", "-i", self.index, "--query-gpu=utilization.gpu",
               "--format=csv,noheader,nounits"]  # fmt: skip
        while not self._stop.wait(self.interval):
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                return
            self.samples += parse_utilisation(out)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {
            "gpu_util_mean_pct": statistics.fmean(self.samples),
            "gpu_util_max_pct": max(self.samples),
        }


def parse_utilisation(text: str) -> list[float]:
    """Percentages from ``nvidia-smi --query-gpu=utilization.gpu --format=csv,...`` output."""
    out = []
    for line in text.splitlines():
        try:
            out.append(float(line.strip().rstrip("%").strip()))
        except ValueError:
            continue
    return out
