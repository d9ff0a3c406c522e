"""surgeon::hadamard(x): x @ H_n^T along the last axis, H_n the orthonormal Hadamard matrix
of surgeon/hadamard.py (the same matrix the offline weight transforms use, so the online
op and a folded inverse always cancel).

- `hadamard_ref`: the pure-torch fast Walsh-Hadamard transform, O(n log n) butterflies
  for the 2^m factor and a K x K product for the rest; float32 and wider compute in
  their own dtype, half types in float32.
- the custom op and its fake: torch.export sees one opaque node, a checkpoint stores it
  as `surgeon.hadamard.default` (surgeon/emit/checkpoint.py allows this namespace).
- `onnx_lowering`: MatMul by the constant H_n^T (the feature size is static), standard
  ONNX that onnxruntime runs.

The Triton kernel (GPU) is the kernels issue's; CPU and export always run the reference.
"""

from __future__ import annotations

import torch

from surgeon.hadamard import fast_hadamard, hadamard_matrix


def hadamard_ref(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        return fast_hadamard(x.float(), transpose).to(x.dtype)
    return fast_hadamard(x, transpose)


@torch.library.custom_op("surgeon::hadamard", mutates_args=())
def hadamard(x: torch.Tensor) -> torch.Tensor:
    """The online transform x H^T (always a new tensor, as custom ops must return)."""
    return hadamard_ref(x)


@torch.library.custom_op("surgeon::hadamard_t", mutates_args=())
def hadamard_t(x: torch.Tensor) -> torch.Tensor:
    """Its inverse x H: what the transform's gradient needs (y = x H^T: dL/dx = dL/dy H)."""
    return hadamard_ref(x, transpose=True)


@hadamard.register_fake
def _hadamard_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@hadamard_t.register_fake
def _hadamard_t_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


hadamard.register_autograd(lambda ctx, grad: torch.ops.surgeon.hadamard_t(grad))
hadamard_t.register_autograd(lambda ctx, grad: torch.ops.surgeon.hadamard(grad))

OP = torch.ops.surgeon.hadamard.default


def onnx_lowering(x):  # an onnxscript SymbolicTensor: its last dim is static
    import onnxscript
    from onnxscript import opset18 as op

    n = int(x.shape[-1])
    dtype = {onnxscript.ir.DataType.FLOAT16: torch.float16}.get(x.dtype, torch.float32)
    h = hadamard_matrix(n).T.to(dtype).numpy()
    return op.MatMul(x, op.Constant(value=onnxscript.ir.tensor(h)))
