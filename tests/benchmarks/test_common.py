"""Helpers of the benchmark scripts that need no model: GPU utilisation sampling."""

from __future__ import annotations

from benchmarks.common import GpuUtilisation, parse_utilisation


def test_nvidia_smi_output_is_parsed_into_percentages() -> None:
    assert parse_utilisation("87\n 93 %\n\n[N/A]\n") == [87.0, 93.0]


def test_no_gpu_sampling_on_a_cpu_device() -> None:
    with GpuUtilisation("cpu") as gpu:
        pass
    assert not gpu.enabled and gpu.summary() == {}
    sampled = GpuUtilisation("cuda:1")
    assert sampled.index == "1"
    sampled.samples = [50.0, 70.0]
    assert sampled.summary() == {"gpu_util_mean_pct": 60.0, "gpu_util_max_pct": 70.0}
