"""surgeon::lowrank_linear (surgeon/kernels/lowrank_linear.py): the op equals numpy's
(x A^T) B^T + b on CPU (two GEMMs), lowers to ONNX that onnxruntime runs alike, and the
Triton decode kernel equals the reference under Triton's CPU interpreter (small ragged
shapes and ranks, fp32/fp16/bf16, 1 to 8 tokens)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon.kernels.lowrank_linear import OP, onnx_lowering
from tests.kernels.interpreter import assert_cases, run_interpreted
from tests.kernels.onnx_parity import assert_onnx_runs_like_torch


def _case(m: int, k: int, r: int, n: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, k, generator=g).to(dtype), torch.randn(r, k, generator=g).to(dtype),
            torch.randn(r, n, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype))


def test_cpu_op_is_the_numpy_formula() -> None:
    x, a, bt, b = _case(5, 40, 6, 24, 1)
    want = (x.double().numpy() @ a.double().numpy().T) @ bt.double().numpy() + b.numpy()
    got = OP(x.reshape(1, 5, 40), a, bt, b)
    assert got.shape == (1, 5, 24)
    np.testing.assert_allclose(got[0].double().numpy(), want, rtol=1e-5, atol=1e-4)
    torch.library.opcheck(OP, (x, a, bt, b))
    torch.library.opcheck(OP, (x, a, bt, None))


def test_mismatched_factors_are_refused() -> None:
    x, a, bt, b = _case(3, 16, 4, 8, 2)
    with pytest.raises(ValueError, match="must share r"):
        OP(x, a, bt[:3])
    with pytest.raises(ValueError, match="x has 15 features"):
        OP(x[:, :15], a, bt)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _, a, bt, b = _case(1, 32, 5, 12, 4)
        for name, v in (("a", a), ("bt", bt), ("b", b)):
            setattr(self, name, torch.nn.Parameter(v, requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OP(x, self.a, self.bt, self.b)


def test_onnx_lowering_runs_in_onnxruntime() -> None:
    assert_onnx_runs_like_torch(_Net(), OP, onnx_lowering, 32, tol=1e-4)



KERNEL_CASES = '''
import json, torch
from surgeon.kernels.lowrank_linear import lowrank_linear_triton, lowrank_linear_ref, OP
from tests.kernels.test_lowrank_linear import _case
out = []
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for m, k, r, n in [(1, 40, 3, 24), (3, 67, 17, 130), (8, 100, 33, 33), (2, 513, 40, 65)]:
        for with_bias in (False, True):
            x, a, bt, b = _case(m, k, r, n, m * k + n, dtype)
            b = b if with_bias else None
            got = lowrank_linear_triton(x, a, bt, b)
            want = lowrank_linear_ref(x.double(), a.double(), bt.double(),
                                      b.double() if with_bias else None)
            out.append({"dtype": str(dtype), "m": m, "k": k, "r": r, "n": n,
                        "err": float((got.double() - want).abs().max() / want.abs().max()),
                        "same_as_op": bool(torch.equal(got, OP(x, a, bt, b)))})
print(json.dumps(out))
'''


def test_triton_kernel_matches_the_reference_in_the_interpreter() -> None:
    results = run_interpreted(KERNEL_CASES)
    assert_cases(results, 24, {"torch.float32": 1e-5, "torch.float16": 2e-3,
                                 "torch.bfloat16": 1e-2}, "same_as_op")
