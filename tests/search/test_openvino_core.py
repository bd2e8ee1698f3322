"""OpenVINO runners share one Core: destroying runners in any order never leaves a thread's
signal stack unmapped (which crashed the next Python signal handler with SIGSEGV)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino")

# Two runners on a tiny IR, released first-in first-out, then a Python signal handler runs on
# the thread that loaded them. With one Core per runner this process died of SIGSEGV (rc -11).
SCRIPT = textwrap.dedent(
    """
    import gc, os, signal, sys
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops
    from search.backends.export import ExportCache
    from search.backends.runtimes import OpenVinoRunner

    exports = ExportCache(sys.argv[1], "tiny")
    exports.openvino_xml.parent.mkdir(parents=True)
    x = ops.parameter([1, 3, 4, 4], np.float32)
    ov.save_model(ov.Model([ops.relu(x)], [x]), str(exports.openvino_xml))
    first = OpenVinoRunner(exports, precision="fp32", threads=1)
    second = OpenVinoRunner(exports, precision="fp32", threads=1)
    assert first.run(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 3, 4, 4)
    del first
    gc.collect()
    del second
    gc.collect()
    signal.signal(signal.SIGUSR1, lambda *_: print("handler ran", flush=True))
    os.kill(os.getpid(), signal.SIGUSR1)
    print("alive", flush=True)
    """
)


def test_runners_released_in_any_order_keep_signal_handlers_working(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"rc {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.split() == ["handler", "ran", "alive"]


def test_every_runner_uses_the_one_core() -> None:
    from search.backends.runtimes import openvino_core

    assert openvino_core() is openvino_core()
