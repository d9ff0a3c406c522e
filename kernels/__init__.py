"""Kernels behind torch.library custom ops (surgeon.kernels), one file per op: the op (what
torch.export captures as one opaque node), its fake (shapes for export), a pure-torch
reference that CPU runs, and an ONNX lowering to standard ops. Triton stays optional.

Importing this package registers every op; ONNX_LOWERINGS maps each op to its lowering
(the ONNX emitter's custom_translation_table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from surgeon.kernels import hadamard

ONNX_LOWERINGS: dict[Any, Callable[..., Any]] = {hadamard.OP: hadamard.onnx_lowering}
