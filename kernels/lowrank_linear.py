"""surgeon::lowrank_linear(x, a, b_t, bias): a factorized linear in one launch for decode,

    y = (x A^T) B^T + bias      A: (r, in), stored as is; B: (out, r), stored as b_t = B^T (r, out)

so both factors are read row by row, each exactly once: what decode (memory-bound) pays
for is their bytes, r (in + out) instead of in * out.

- `_lowrank_linear_kernel`: a program owns BLOCK_R of the rank: it computes its slice of
  h = x A^T from its rows of A (the whole input, in BLOCK_K steps), then adds h_slice
  b_t[slice, :] into every output tile (float32, atomically: the slices sum to y). The
  weights are read once in all; the price is r / BLOCK_R float32 additions per output.
- `lowrank_linear`: the wrapper; the kernel for a few tokens on a GPU with Triton, two
  GEMMs otherwise (prefill is compute-bound; CPU and export run them too).
- the custom op, its fake and its ONNX lowering (MatMul, MatMul, Add).

Factorized weights come from `factorize` (SVD-LLM: "SVD-LLM: Truncation-aware Singular
Value Decomposition for Large Language Model Compression", Wang et al., arXiv:2403.07378).
"""

from __future__ import annotations

import torch

from surgeon.kernels.triton_support import triton, triton_ready

DECODE_MAX_TOKENS = 8
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def lowrank_linear_ref(x: torch.Tensor, a: torch.Tensor, b_t: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    y = (x @ a.T) @ b_t
    return y + bias if bias is not None else y


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _lowrank_linear_kernel(x_ptr, a_ptr, b_ptr, out_ptr, M, R,
                               K: tl.constexpr, N: tl.constexpr,  # loop bounds: the layer's
                               stride_xm, stride_a, stride_b, stride_om,
                               BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
                               BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        offs_m = tl.arange(0, BLOCK_M)
        offs_r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        in_m, in_r = offs_m < M, offs_r < R
        h = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            in_k = offs_k < K
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=in_m[:, None] & in_k[None, :], other=0.0).to(tl.float32)
            a = tl.load(a_ptr + offs_r[:, None] * stride_a + offs_k[None, :],
                        mask=in_r[:, None] & in_k[None, :], other=0.0).to(tl.float32)
            h += tl.sum(x[:, None, :] * a[None, :, :], axis=2)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            in_n = offs_n < N
            b = tl.load(b_ptr + offs_r[:, None] * stride_b + offs_n[None, :],
                        mask=in_r[:, None] & in_n[None, :], other=0.0).to(tl.float32)
            y = tl.sum(h[:, :, None] * b[None, :, :], axis=1)
            tl.atomic_add(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], y,
                          mask=in_m[:, None] & in_n[None, :])


def lowrank_linear_triton(x: torch.Tensor, a: torch.Tensor, b_t: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """The decode kernel, for x of at most DECODE_MAX_TOKENS rows (any leading shape)."""
    r, k = a.shape
    n = b_t.shape[1]
    rows = x.reshape(-1, k).contiguous()
    m = rows.shape[0]
    if not 1 <= m <= DECODE_MAX_TOKENS:
        raise ValueError(f"the decode kernel takes 1..{DECODE_MAX_TOKENS} tokens, got {m}")
    block_m = max(1, triton.next_power_of_2(m))
    block_r = 16  # r / 16 programs: ~100 for a 4096 x 14336 layer at half its parameters
    block_k = block_n = max(16, 4096 // (block_m * block_r))  # <= 4K products per step
    out = torch.zeros(m, n, device=x.device, dtype=torch.float32)
    _lowrank_linear_kernel[(triton.cdiv(r, block_r),)](
        rows, a, b_t, out, m, r, k, n, rows.stride(0), a.stride(0), b_t.stride(0),
        out.stride(0), BLOCK_M=block_m, BLOCK_R=block_r, BLOCK_K=block_k, BLOCK_N=block_n)
    if bias is not None:
        out += bias.to(torch.float32)
    return out.to(x.dtype).reshape(*x.shape[:-1], n)


def _check(x: torch.Tensor, a: torch.Tensor, b_t: torch.Tensor,
           bias: torch.Tensor | None) -> None:
    if a.dim() != 2 or b_t.dim() != 2 or a.shape[0] != b_t.shape[0]:
        raise ValueError(f"lowrank_linear: a (r, in) and b_t (r, out) must share r, got "
                         f"{tuple(a.shape)} and {tuple(b_t.shape)}")
    if x.shape[-1] != a.shape[1]:
        raise ValueError(f"lowrank_linear: x has {x.shape[-1]} features, a {a.shape[1]}")
    if bias is not None and bias.shape != (b_t.shape[1],):
        raise ValueError(f"lowrank_linear: bias must be ({b_t.shape[1]},), "
                         f"got {tuple(bias.shape)}")
    if not x.dtype == a.dtype == b_t.dtype:
        raise ValueError(f"lowrank_linear: x, a, b_t are {x.dtype}, {a.dtype}, {b_t.dtype}")


@torch.library.custom_op("surgeon::lowrank_linear", mutates_args=())
def lowrank_linear(x: torch.Tensor, a: torch.Tensor, b_t: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Decode kernel for a few tokens on a GPU with Triton; two GEMMs otherwise."""
    _check(x, a, b_t, bias)
    tokens = x.numel() // max(x.shape[-1], 1)
    if (triton_ready(x) and x.dtype in KERNEL_DTYPES and a.stride(1) == 1
            and b_t.stride(1) == 1 and 1 <= tokens <= DECODE_MAX_TOKENS):
        return lowrank_linear_triton(x, a, b_t, bias)
    return lowrank_linear_ref(x, a, b_t, bias)


@lowrank_linear.register_fake
def _lowrank_linear_fake(x, a, b_t, bias=None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], b_t.shape[1]))


OP = torch.ops.surgeon.lowrank_linear.default


def onnx_lowering(x, a, b_t, bias=None):  # onnxscript tensors
    from onnxscript import opset18 as op

    y = op.MatMul(op.MatMul(x, op.Transpose(a, perm=[1, 0])), b_t)
    return op.Add(y, bias) if bias is not None else y
