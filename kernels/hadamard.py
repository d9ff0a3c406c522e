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

- `_hadamard_kernel`: the same transform in one pass over memory on a GPU: a program
  loads one token's n = K * 2^m values as a (K, 2^m) tile, runs the 2^m butterflies in
  registers (reshape, split, join), multiplies by H_K (tl.dot, IEEE float32) and stores
  the result scaled by 1/sqrt(n); `hadamard_triton` launches it. CPU, export and sizes
  the kernel does not take (2^m < 16) run the reference.
"""

from __future__ import annotations

import math
from functools import cache

import torch

from surgeon.hadamard import base_matrix, check_size, fast_hadamard, hadamard_matrix
from surgeon.kernels.triton_support import triton, triton_ready

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def hadamard_ref(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        return fast_hadamard(x.float(), transpose).to(x.dtype)
    return fast_hadamard(x, transpose)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _hadamard_kernel(x_ptr, h_ptr, out_ptr, scale, stride_x, stride_o,
                         K: tl.constexpr, K_PAD: tl.constexpr, P: tl.constexpr,
                         LOG_P: tl.constexpr):
        row = tl.program_id(0)
        offs_k = tl.arange(0, K_PAD)
        offs_p = tl.arange(0, P)
        tile = offs_k[:, None] * P + offs_p[None, :]
        in_k = offs_k[:, None] < K
        x = tl.load(x_ptr + row * stride_x + tile, mask=in_k, other=0.0).to(tl.float32)
        for s in tl.static_range(LOG_P):  # Sylvester: pairs (i, i + 2^s) in blocks of 2^(s+1)
            x = tl.permute(tl.reshape(x, (K_PAD, P // (2 << s), 2, 1 << s)), (0, 1, 3, 2))
            a, b = tl.split(x)
            x = tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2)), (K_PAD, P))
        if K > 1:
            hk = tl.load(h_ptr + offs_k[:, None] * K_PAD + offs_k[None, :])
            x = tl.dot(hk, x, input_precision="ieee")
        tl.store(out_ptr + row * stride_o + tile, (x * scale).to(out_ptr.dtype.element_ty),
                 mask=in_k)


@cache
def _padded_base(k: int, transpose: bool, device: torch.device) -> torch.Tensor:
    pad = max(16, triton.next_power_of_2(k))
    h = torch.zeros(pad, pad, dtype=torch.float32)
    base = base_matrix(k).T if transpose else base_matrix(k)
    h[:k, :k] = base.float()
    return h.to(device)


def kernel_takes(x: torch.Tensor) -> bool:
    n = x.shape[-1]
    found = check_size(n) if n > 0 else None
    return (triton_ready(x) and x.dtype in KERNEL_DTYPES and found is not None
            and found[1] >= 16 and n <= 65536 and x.numel() > 0)


def hadamard_triton(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    n = x.shape[-1]
    k, power = check_size(n)
    rows = x.reshape(-1, n).contiguous()
    out = torch.empty_like(rows)
    _hadamard_kernel[(rows.shape[0],)](
        rows, _padded_base(k, transpose, x.device), out, 1.0 / math.sqrt(n),
        rows.stride(0), out.stride(0), K=k, K_PAD=max(16, triton.next_power_of_2(k)),
        P=power, LOG_P=power.bit_length() - 1)
    return out.reshape(x.shape)


@torch.library.custom_op("surgeon::hadamard", mutates_args=())
def hadamard(x: torch.Tensor) -> torch.Tensor:
    """The online transform x H^T (always a new tensor, as custom ops must return)."""
    return hadamard_triton(x) if kernel_takes(x) else hadamard_ref(x)


@torch.library.custom_op("surgeon::hadamard_t", mutates_args=())
def hadamard_t(x: torch.Tensor) -> torch.Tensor:
    """Its inverse x H: what the transform's gradient needs (y = x H^T: dL/dx = dL/dy H)."""
    return hadamard_triton(x, True) if kernel_takes(x) else hadamard_ref(x, transpose=True)


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
