"""Inference backends for the image tower: PyTorch, ONNX Runtime and OpenVINO.

``torch`` runs the open_clip model itself (the reference; autocast on CUDA). ``onnxruntime``
and ``openvino`` run its image tower exported once to ONNX (:mod:`.export`; OpenVINO then
converts it to its own IR), cached by the model's checkpoint hash and shared by the indexer,
the server and the CLI. ``auto`` is torch on CUDA and, on a CPU, the fastest of the three
measured on this machine (:mod:`.calibrate`, cached per machine). Every backend gives the
same vectors (cosine >= 0.999 to PyTorch's, tests/search/test_backends.py); text queries
always run in PyTorch.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")  # the exported-graph backends (CPU)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def installed(backend: str) -> bool:
    """Whether the backend's package is importable (without importing it)."""
    module = "torch" if backend == "torch" else backend
    return importlib.util.find_spec(module) is not None
