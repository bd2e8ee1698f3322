"""The mixed-precision policy: what a forward pass on a device runs in.

One rule for every forward pass of ours (the embedder's PyTorch backend, evaluation's trunk
features, fine-tuning's training and validation passes): on CUDA, ``auto`` is bf16 where the
GPU supports it, else fp16; ``fp16`` / ``bf16`` ask for that type; ``fp32`` turns autocast off.
On the CPU every precision runs plain fp32 (the exported runtimes have their own, see
:mod:`search.backends.runtimes`). A training pass in fp16 needs a gradient scaler
(:func:`scales_gradients`); bf16 and fp32 do not.

Importing this module does not import torch; the functions do.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..backends import PRECISIONS
from ..errors import ModelError


def autocast_dtype(precision: str, device: str) -> Any:
    """The autocast dtype for ``precision`` on ``device`` (a torch dtype), or None: fp32."""
    import torch

    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "fp32" or not device.startswith("cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str, precision: str = "auto") -> Any:
    """A context manager running its forward passes in the policy's precision."""
    import torch

    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def scales_gradients(device: str, precision: str = "auto") -> bool:
    """Whether training under :func:`autocast` needs a gradient scaler (fp16 on CUDA)."""
    import torch

    return autocast_dtype(precision, device) == torch.float16


def precision_name(dtype: Any) -> str:
    """The short name of an autocast dtype ("bf16", "fp16"), or "fp32" for None."""
    if dtype is None:
        return "fp32"
    return str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")
