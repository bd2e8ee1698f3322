"""benchmarks/roofline.py: the model's work counted from its graph, and the bound it gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import roofline

ov = pytest.importorskip("openvino")


def _graph() -> object:
    """(N, 3, 16, 16) -> 3x3 conv to 8 (stride 1, pad 1) -> 3x3 depthwise (stride 2) ->
    1x1 conv to 4 -> global mean -> MatMul to 5: the multiply-adds are known by hand."""
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([-1, 3, 16, 16], np.float32)
    conv = ops.convolution(
        x, ops.constant(rng.random((8, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1]
    )
    dw = ops.group_convolution(
        conv, ops.constant(rng.random((8, 1, 1, 3, 3), np.float32)), [2, 2], [1, 1], [1, 1], [1, 1]
    )
    point = ops.convolution(
        dw, ops.constant(rng.random((4, 8, 1, 1), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1]
    )
    pooled = ops.reduce_mean(point, ops.constant(np.array([2, 3])), False)
    head = ops.matmul(pooled, ops.constant(rng.random((4, 5), np.float32)), False, False)
    return ov.Model([head], [x])


def test_model_macs_counts_convolutions_and_matrix_products() -> None:
    expected = (
        8 * 16 * 16 * (3 * 3 * 3)  # conv: every output element sums 3 channels x 3 x 3
        + 8 * 8 * 8 * (3 * 3)  # depthwise, stride 2: 8 channels of 8 x 8, 3 x 3 each
        + 4 * 8 * 8 * 8  # 1x1: 4 channels of 8 x 8, 8 inputs each
        + 5 * 4  # the head
    )
    assert roofline.model_macs(_graph()) == expected


def test_model_macs_of_a_saved_ir(tmp_path) -> None:
    xml = tmp_path / "model.xml"
    ov.save_model(_graph(), str(xml))
    assert roofline.model_macs(xml) == roofline.model_macs(_graph()) > 0


def test_forward_gflops_and_the_ratio_bound() -> None:
    macs = 400_000_000  # 0.8 GFLOP per picture
    assert math.isclose(roofline.forward_gflops(macs, 8.0), 100.0)
    rows = [
        {"backend": "torch", "indexer_img_s": 50.0, "indexer_cpu_ms": 30.0,
         "forward_cpu_ms": 20.0, "of_cpu_ceiling": 0.75},
        {"backend": "onnxruntime", "indexer_img_s": 70.0, "indexer_cpu_ms": 22.0,
         "forward_cpu_ms": 12.0, "of_cpu_ceiling": 0.77},
        {"backend": "openvino", "indexer_img_s": 90.0, "indexer_cpu_ms": 20.0,
         "forward_cpu_ms": 10.0, "of_cpu_ceiling": 0.9},
    ]  # fmt: skip
    bound = roofline.ratio_bound(rows, macs, gemm=100.0, cores=2)
    assert (bound["backend"], bound["vs"]) == ("openvino", "torch")  # the fastest indexer
    assert math.isclose(bound["forward_at_gemm_rate_cpu_ms"], 8.0)
    assert math.isclose(bound["rest_cpu_ms"], 10.0)
    assert math.isclose(bound["ceiling_img_s"], 2000 / 18)
    assert math.isclose(bound["ratio_measured"], 1.8)
    assert math.isclose(bound["ratio_at_full_share"], 2000 / 18 / 50)
    assert math.isclose(bound["ratio_at_run_share"], 0.9 * 2000 / 18 / 50)


def test_gemm_rate_is_measured() -> None:
    rate = roofline.gemm_gflops(size=128, seconds=0.05, rounds=1)
    assert 0.1 < rate < 10_000  # GFLOP/s of one core: measured, not a constant
