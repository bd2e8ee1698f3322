"""The allocator tuning keeps a CPU forward's activation pages in the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from search.config import Settings

# Ten forward passes of a small conv stack at batch 8 (activations of 13-38 MB, as in
# EfficientNet-Lite0's first blocks); prints the minor page faults they caused.
_PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from torch import nn
    from search.allocator import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
    torch.set_num_threads(1)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 96, 1), nn.ReLU(),
        nn.Conv2d(96, 96, 3, 1, 1, groups=96), nn.ReLU(), nn.Conv2d(96, 24, 1),
    ).eval()
    x = torch.rand(8, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            net(x)
    print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow  # two fresh interpreters importing torch: the setting is process-wide
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_allocator_reuses_pages_instead_of_faulting_them_in_again() -> None:
    tuned_flag, tuned = _faults("tuned")
    _, default = _faults("default")
    assert tuned_flag == "True"
    # default glibc: every activation is mmap'd afresh (~600,000 faults seen here); tuned:
    # usually 0, once 9,408 in a full test run (a block first grown inside the timed loop)
    assert default > 100_000
    assert tuned < default // 20


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: with the switch off, the function returns before calling mallopt."""
    from search import allocator

    calls: list[str] = []
    monkeypatch.setattr(allocator, "_applied", None)  # as in a fresh process
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: calls.append("CDLL"))
    monkeypatch.setattr(allocator, "_allowed", True)
    monkeypatch.setenv("VSEARCH_MALLOC_TUNING", "0")
    settings = Settings.from_env()
    assert settings.model.malloc_tuning is False  # a real boolean, not the string "0"
    allocator.allow(settings.model.malloc_tuning)  # what Embedder.from_settings does
    assert allocator.keep_freed_memory() is False
    assert allocator.keep_freed_memory() is False and calls == []
