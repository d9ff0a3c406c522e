"""surgeon::sparsify(x, threshold, scale): x with its low-scoring entries zeroed,

    y = x * (|x| * scale > threshold)        (scale omitted: |x| > threshold)

the mask of training-free activation sparsity (TEAL's |x|, WINA's |x_i| ||W_:,i||_2 with
the reading weight's column norms as `scale`), one opaque node in front of the linears
that read it, so a decode kernel can skip the weight columns of the zeros. `threshold` is
a one-element tensor (a calibrated quantile), `scale` a vector over the last axis; both
float32, and scores are compared in float32 for half-precision inputs.

- `sparsify_ref`: the pure-torch mask, what CPU and export run; ties at the threshold
  are zeroed (strict >), as the ONNX lowering does.
- the custom op, its fake and its gradient (the mask times the incoming gradient: the
  zeroed entries pass none back, so adapters trained after sparsify see what runs).
- `onnx_lowering`: Abs, Mul, Greater, Where: standard ONNX that onnxruntime runs.

The Triton kernel (a GEMV that skips masked columns) is the kernels issue's.
"""

from __future__ import annotations

import torch


def keep_mask(x: torch.Tensor, threshold: torch.Tensor,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """True where the entry survives: its score, in float32 or wider, is above the
    threshold (half-precision scores would move it by up to 2^-8 of itself)."""
    wide = x.abs() if x.dtype in (torch.float32, torch.float64) else x.abs().float()
    score = wide if scale is None else wide * scale.to(wide.dtype)
    return score > threshold.to(wide.dtype)


def sparsify_ref(x: torch.Tensor, threshold: torch.Tensor,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
    return torch.where(keep_mask(x, threshold, scale), x, torch.zeros((), dtype=x.dtype))


@torch.library.custom_op("surgeon::sparsify", mutates_args=())
def sparsify(x: torch.Tensor, threshold: torch.Tensor,
             scale: torch.Tensor | None = None) -> torch.Tensor:
    """The masked input (always a new tensor, as custom ops must return)."""
    return sparsify_ref(x, threshold, scale)


@sparsify.register_fake
def _sparsify_fake(x: torch.Tensor, threshold: torch.Tensor,
                   scale: torch.Tensor | None = None) -> torch.Tensor:
    return torch.empty_like(x)


def _setup(ctx, inputs, output) -> None:
    x, threshold, scale = inputs
    ctx.save_for_backward(x, threshold, scale)


def _backward(ctx, grad: torch.Tensor):
    x, threshold, scale = ctx.saved_tensors
    return grad * keep_mask(x, threshold, scale).to(grad.dtype), None, None


sparsify.register_autograd(_backward, setup_context=_setup)

OP = torch.ops.surgeon.sparsify.default


def onnx_lowering(x, threshold, scale=None):  # onnxscript SymbolicTensors
    import onnxscript
    from onnxscript import opset18 as op

    wide = op.Abs(x) if x.dtype == onnxscript.ir.DataType.DOUBLE else \
        op.Cast(op.Abs(x), to=onnxscript.ir.DataType.FLOAT)
    score = wide if scale is None else op.Mul(wide, op.CastLike(scale, wide))
    keep = op.Greater(score, op.CastLike(threshold, wide))
    return op.Where(keep, x, op.CastLike(op.Constant(value_float=0.0), x))
