"""How close a backend's forward pass is to what this CPU can compute, and what that bounds.

The model's work is counted, not looked up: the multiply-adds of every convolution and
matrix product in the exported graph (OpenVINO IR, at one picture). The CPU's practical f32
rate is measured, not assumed: a square matrix product run by OpenVINO on one thread, i.e.
the same oneDNN kernels that run the model's convolutions (a core's theoretical peak needs a
clock frequency a VM does not report reliably).

From these, for the indexer comparison of ``bench_indexing --backends``:

- each backend's forward in GFLOP/s per core, and as a share of the measured GEMM rate;
- ``ratio_bound``: the indexer ratio to the first backend (torch) that the fastest runtime
  could reach if its forward ran at the GEMM rate, everything else (decode, preprocessing,
  writes, contention) costing what it cost in the run; at the run's own share of the CPU
  ceiling, and with every core busy all the time (share 1.0).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

_COUNTED = ("Convolution", "GroupConvolution", "MatMul")


def model_macs(ir: Any) -> int:
    """Multiply-adds per picture of an OpenVINO model (a path to its IR, or the model):
    convolutions, grouped convolutions and matrix products, at batch 1.

    Elementwise work (activations, normalisation, pooling) is left out: it is memory-bound
    and a small share of a convolutional network's time.
    """
    from search.backends.runtimes import openvino_core

    model = openvino_core().read_model(str(ir)) if isinstance(ir, (str, Path)) else ir.clone()
    shape = list(model.input(0).get_partial_shape())
    model.reshape([1, *(d.get_length() for d in shape[1:])])
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in _COUNTED:
            continue
        out = op.get_output_partial_shape(0).to_shape()
        if kind == "MatMul":
            a = op.input(0).get_partial_shape().to_shape()
            transpose_a = op.get_attributes().get("transpose_a", False)
            inner = a[-2] if transpose_a and len(a) > 1 else a[-1]
        else:
            weights = op.input(1).get_partial_shape().to_shape()
            # Convolution: (out, in, *kernel); GroupConvolution: (groups, out/g, in/g, *kernel)
            per_output = weights[1:] if kind == "Convolution" else weights[2:]
            inner = math.prod(per_output)
        total += math.prod(out) * inner
    return int(total)


def gemm_gflops(size: int = 1024, seconds: float = 0.5, rounds: int = 3) -> float:
    """This core's f32 matrix-product rate, GFLOP/s on one thread (OpenVINO's MatMul of two
    ``size`` x ``size`` matrices, best of ``rounds`` of ``seconds`` each, CPU time)."""
    import openvino as ov
    from openvino import opset13 as ops

    from search.backends.runtimes import openvino_core

    rng = np.random.default_rng(0)
    left = ops.parameter([size, size], np.float32)
    right = ops.constant(rng.random((size, size), np.float32))
    model = ov.Model([ops.matmul(left, right, False, False)], [left])
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }
    request = openvino_core().compile_model(model, "CPU", config).create_infer_request()
    x = rng.random((size, size), np.float32)
    request.infer({0: x})  # warm-up
    best = 0.0
    for _ in range(rounds):
        done, cpu0 = 0, time.process_time()
        while (cpu := time.process_time() - cpu0) < seconds:
            request.infer({0: x})
            done += 1
        best = max(best, 2 * size**3 * done / cpu / 1e9)
    return best


def forward_gflops(macs: int, forward_cpu_ms: float) -> float:
    """GFLOP/s per core of a forward pass costing ``forward_cpu_ms`` core-ms per picture."""
    return 2 * macs / (forward_cpu_ms * 1e-3) / 1e9


def ratio_bound(rows: list[dict[str, Any]], macs: int, gemm: float, cores: int) -> dict[str, Any]:
    """What the fastest runtime's indexer could reach against ``rows[0]`` (the first backend)
    with its forward at the GEMM rate (rows: ``bench_indexing``'s per-backend medians)."""
    first, others = rows[0], rows[1:]
    best = max(others, key=lambda r: r["indexer_img_s"])
    floor_ms = 2 * macs / (gemm * 1e9) * 1e3  # core-ms per picture at the GEMM rate
    other_ms = best["indexer_cpu_ms"] - best["forward_cpu_ms"]
    ceiling = 1000 * cores / (floor_ms + other_ms)
    return {
        "backend": best["backend"],
        "vs": first["backend"],
        "forward_at_gemm_rate_cpu_ms": floor_ms,
        "forward_cpu_ms": best["forward_cpu_ms"],
        "rest_cpu_ms": other_ms,
        "ceiling_img_s": ceiling,
        "ratio_measured": best["indexer_img_s"] / first["indexer_img_s"],
        "ratio_at_run_share": ceiling * best["of_cpu_ceiling"] / first["indexer_img_s"],
        "ratio_at_full_share": ceiling / first["indexer_img_s"],
    }
