"""Triton, optional: `triton` is the module or None (the CPU install does without it), and
`triton_ready(x)` says whether a kernel may run on x: Triton imported and x on a CUDA
device, or TRITON_INTERPRET=1 (Triton's CPU interpreter, which the parity tests use on
small shapes)."""

from __future__ import annotations

import os

import torch

try:
    import triton
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_ready(x: torch.Tensor) -> bool:
    return triton is not None and (x.is_cuda or interpreting())
