"""surgeon::sparsify_topk(x, k): per token (last axis), x with all but its k largest-|x|
entries zeroed: LaRoSA's mask, the same share of zeros on every token (so a decode kernel
gets a fixed amount of work), applied to a rotated input whose energy PCA has packed into
few coordinates.

- `sparsify_topk_ref`: keeps |x| >= the k-th largest |x| of the token (scores in
  float32 or wider); a tie at the k-th value keeps every tied entry, as the ONNX lowering
  does, so torch, export and onnxruntime agree.
- the custom op, its fake and its gradient (the mask times the incoming gradient).
- `onnx_lowering`: Abs, TopK, GreaterOrEqual, Where.

"La RoSA: Enhancing LLM Efficiency via Layerwise Rotated Sparse Activation", Liu et al.,
arXiv:2507.01299. The Triton kernel is the kernels issue's.
"""

from __future__ import annotations

import torch


def keep_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """True on each token's k largest |x| (and on ties with the k-th)."""
    score = x.abs() if x.dtype in (torch.float32, torch.float64) else x.abs().float()
    kth = score.topk(k, dim=-1).values[..., -1:]
    return score >= kth


def sparsify_topk_ref(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.where(keep_topk(x, k), x, torch.zeros((), dtype=x.dtype))


@torch.library.custom_op("surgeon::sparsify_topk", mutates_args=())
def sparsify_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """The masked input (always a new tensor, as custom ops must return)."""
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"sparsify_topk keeps k in [1, {x.shape[-1]}], got {k}")
    return sparsify_topk_ref(x, k)


@sparsify_topk.register_fake
def _sparsify_topk_fake(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.empty_like(x)


def _setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.k = inputs[1]


def _backward(ctx, grad: torch.Tensor):
    (x,) = ctx.saved_tensors
    return grad * keep_topk(x, ctx.k).to(grad.dtype), None


sparsify_topk.register_autograd(_backward, setup_context=_setup)

OP = torch.ops.surgeon.sparsify_topk.default


def onnx_lowering(x, k: int):  # an onnxscript SymbolicTensor and a Python int
    import onnxscript
    from onnxscript import opset18 as op

    wide = op.Abs(x) if x.dtype == onnxscript.ir.DataType.DOUBLE else \
        op.Cast(op.Abs(x), to=onnxscript.ir.DataType.FLOAT)
    values, _ = op.TopK(wide, op.Constant(value_ints=[k]), axis=-1, largest=1, sorted=1)
    kth = op.Slice(values, op.Constant(value_ints=[k - 1]), op.Constant(value_ints=[k]),
                   op.Constant(value_ints=[-1]))
    return op.Where(op.GreaterOrEqual(wide, kth), x, op.CastLike(op.Constant(value_float=0.0), x))
