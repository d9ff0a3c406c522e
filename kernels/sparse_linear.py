"""surgeon::sparse_linear(x, weight_t, threshold, scale, bias): a linear layer reading an
activation-sparsity mask (surgeon/kernels/sparsify.py) in one launch,

    y = (x * [|x| s > t]) W^T + b      with W stored input-major: weight_t = W^T, (in, out)

so that an input entry the mask zeroes skips a whole contiguous row of weight_t: decode
is memory-bound, and the rows never loaded are the speed-up (TEAL's kernel; the public
one is only right for one token, this one for any number).

- `_sparse_linear_kernel`: split-K GEMV for a few tokens (DECODE_MAX_TOKENS). A program
  owns BLOCK_N outputs and every SPLIT_K-th BLOCK_K slice of the inputs; it loads a
  weight row only where some token keeps that input (predicated loads fetch nothing
  where the predicate is off), masks each token's entries, accumulates in float32 and
  adds into a float32 output (atomically when SPLIT_K > 1).
- `sparse_linear`: the wrapper; checks shapes and dtypes, picks the decode kernel for
  a few tokens on a CUDA device with Triton, and otherwise (prefill, CPU, no Triton)
  the dense fallback `sparse_linear_ref`: the masked input times weight_t, in torch.
- the custom op, its fake and its ONNX lowering (the mask's ops, MatMul, Add).

"Training-Free Activation Sparsity in Large Language Models" (TEAL), Liu et al.,
arXiv:2408.14690.
"""

from __future__ import annotations

import torch

from surgeon.kernels.sparsify import keep_mask
from surgeon.kernels.sparsify import onnx_lowering as mask_lowering
from surgeon.kernels.triton_support import triton, triton_ready

DECODE_MAX_TOKENS = 8  # above this, the dense fallback (prefill is compute-bound)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def sparse_linear_ref(x: torch.Tensor, weight_t: torch.Tensor, threshold: torch.Tensor,
                      scale: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    masked = torch.where(keep_mask(x, threshold, scale), x, torch.zeros((), dtype=x.dtype))
    y = masked @ weight_t
    return y + bias if bias is not None else y


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _sparse_linear_kernel(x_ptr, w_ptr, t_ptr, s_ptr, out_ptr, M, N,
                              K: tl.constexpr,  # a layer's width: loop bounds known at compile
                              stride_xm, stride_wk, stride_om,
                              HAS_SCALE: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                              SPLIT_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_m = tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        in_n = offs_n < N
        t = tl.load(t_ptr).to(tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, SPLIT_K * BLOCK_K):
            offs_k = k0 + pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
            in_k = offs_k < K
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=(offs_m[:, None] < M) & in_k[None, :], other=0.0).to(tl.float32)
            score = tl.abs(x)
            if HAS_SCALE:
                score = score * tl.load(s_ptr + offs_k, mask=in_k, other=0.0)[None, :]
            keep = score > t  # padded tokens and inputs hold 0: never kept (t >= 0)
            x = tl.where(keep, x, 0.0)
            rows = tl.max(keep.to(tl.int32), axis=0) > 0  # some token reads this row
            w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :],
                        mask=rows[:, None] & in_n[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(x[:, :, None] * w[None, :, :], axis=1)
        out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        where = (offs_m[:, None] < M) & in_n[None, :]
        if SPLIT_K == 1:
            tl.store(out, acc, mask=where)
        else:
            tl.atomic_add(out, acc, mask=where)


def _blocks(m: int, k: int, n: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_K, BLOCK_N, SPLIT_K): a tile of at most 16K float32 products per
    step, and enough programs to fill a GPU (about 4 per SM of an H100's 132)."""
    block_m = max(1, triton.next_power_of_2(m))
    block_n = 128 if block_m <= 2 else 64
    block_k = max(16, 16384 // (block_m * block_n))
    tiles_n = triton.cdiv(n, block_n)
    split_k = max(1, min(triton.cdiv(k, block_k), 512 // tiles_n))
    return block_m, block_k, block_n, split_k


def sparse_linear_triton(x: torch.Tensor, weight_t: torch.Tensor, threshold: torch.Tensor,
                         scale: torch.Tensor | None = None,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """The decode kernel, for x of at most DECODE_MAX_TOKENS rows (any leading shape)."""
    k, n = weight_t.shape
    rows = x.reshape(-1, k).contiguous()
    m = rows.shape[0]
    if not 1 <= m <= DECODE_MAX_TOKENS:
        raise ValueError(f"the decode kernel takes 1..{DECODE_MAX_TOKENS} tokens, got {m}")
    out = torch.zeros(m, n, device=x.device, dtype=torch.float32)
    block_m, block_k, block_n, split_k = _blocks(m, k, n)
    t = threshold.reshape(1).to(torch.float32).contiguous()
    s = scale.to(torch.float32).contiguous() if scale is not None else t
    _sparse_linear_kernel[(triton.cdiv(n, block_n), split_k)](
        rows, weight_t, t, s, out, m, n, k, rows.stride(0), weight_t.stride(0), out.stride(0),
        HAS_SCALE=scale is not None, BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_N=block_n,
        SPLIT_K=split_k)
    if bias is not None:
        out += bias.to(torch.float32)
    return out.to(x.dtype).reshape(*x.shape[:-1], n)


def _check(x: torch.Tensor, weight_t: torch.Tensor, threshold: torch.Tensor,
           scale: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    k, n = weight_t.shape
    if x.shape[-1] != k:
        raise ValueError(f"sparse_linear: x has {x.shape[-1]} features, weight_t {k} rows")
    if threshold.numel() != 1:
        raise ValueError("sparse_linear: the threshold is one value")
    if scale is not None and scale.shape != (k,):
        raise ValueError(f"sparse_linear: scale must be ({k},), got {tuple(scale.shape)}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"sparse_linear: bias must be ({n},), got {tuple(bias.shape)}")
    if x.dtype != weight_t.dtype:
        raise ValueError(f"sparse_linear: x is {x.dtype}, weight_t {weight_t.dtype}")


@torch.library.custom_op("surgeon::sparse_linear", mutates_args=())
def sparse_linear(x: torch.Tensor, weight_t: torch.Tensor, threshold: torch.Tensor,
                  scale: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Decode kernel for a few tokens on a GPU with Triton; the dense fallback otherwise."""
    _check(x, weight_t, threshold, scale, bias)
    tokens = x.numel() // max(x.shape[-1], 1)
    if (triton_ready(x) and x.dtype in KERNEL_DTYPES and weight_t.stride(1) == 1
            and 1 <= tokens <= DECODE_MAX_TOKENS):
        return sparse_linear_triton(x, weight_t, threshold, scale, bias)
    return sparse_linear_ref(x, weight_t, threshold, scale, bias)


@sparse_linear.register_fake
def _sparse_linear_fake(x, weight_t, threshold, scale=None, bias=None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight_t.shape[1]))


OP = torch.ops.surgeon.sparse_linear.default


def onnx_lowering(x, weight_t, threshold, scale=None, bias=None):  # onnxscript tensors
    from onnxscript import opset18 as op

    y = op.MatMul(mask_lowering(x, threshold, scale), weight_t)
    return op.Add(y, bias) if bias is not None else y
