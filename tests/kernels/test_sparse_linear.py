"""surgeon::sparse_linear (surgeon/kernels/sparse_linear.py): the op equals numpy's
(x * [|x| s > t]) W^T + b on CPU (the dense fallback), lowers to ONNX that onnxruntime
runs alike, and the Triton decode kernel equals the reference under Triton's CPU
interpreter (TRITON_INTERPRET=1, small ragged shapes, fp32/fp16/bf16, 1 to 8 tokens,
split-K on and off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon.kernels.sparse_linear import OP, onnx_lowering
from tests.kernels.interpreter import assert_cases, run_interpreted
from tests.kernels.onnx_parity import assert_onnx_runs_like_torch


def _case(m: int, k: int, n: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    wt = torch.randn(k, n, generator=g).to(dtype)
    s = torch.rand(k, generator=g) + 0.5
    b = torch.randn(n, generator=g).to(dtype)
    return x, wt, torch.tensor([0.6]), s, b


@pytest.mark.parametrize("scaled", [False, True])
def test_cpu_op_is_the_numpy_formula(scaled: bool) -> None:
    x, wt, t, s, b = _case(5, 40, 24, 1)
    s = s if scaled else None
    xn = x.double().numpy()
    score = np.abs(x.numpy()) * (s.numpy() if scaled else np.float32(1))
    want = np.where(score > np.float32(0.6), xn, 0) @ wt.double().numpy() + b.double().numpy()
    got = OP(x.reshape(1, 5, 40), wt, t, s, b)
    assert got.shape == (1, 5, 24)
    np.testing.assert_allclose(got[0].double().numpy(), want, rtol=1e-5, atol=1e-5)


def test_opcheck() -> None:
    x, wt, t, s, b = _case(3, 16, 8, 2)
    torch.library.opcheck(OP, (x, wt, t, s, b))
    torch.library.opcheck(OP, (x, wt, t, None, None))


def test_mismatched_shapes_are_refused() -> None:
    x, wt, t, s, b = _case(3, 16, 8, 3)
    with pytest.raises(ValueError, match="x has 15 features, weight_t 16 rows"):
        OP(x[:, :15], wt, t)
    with pytest.raises(ValueError, match=r"bias must be \(8,\)"):
        OP(x, wt, t, None, b[:7])


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        x, wt, t, s, b = _case(1, 32, 12, 4)
        for name, v in (("wt", wt), ("t", t), ("s", s), ("b", b)):
            setattr(self, name, torch.nn.Parameter(v, requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OP(x, self.wt, self.t, self.s, self.b)


def test_onnx_lowering_runs_in_onnxruntime() -> None:
    ops = assert_onnx_runs_like_torch(_Net(), OP, onnx_lowering, 32, tol=1e-4)
    assert "MatMul" in ops



KERNEL_CASES = '''
import json, torch
from surgeon.kernels.sparse_linear import sparse_linear_triton, sparse_linear_ref, OP
from tests.kernels.test_sparse_linear import _case
out = []
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for m, k, n in [(1, 40, 24), (3, 67, 130), (8, 100, 33), (1, 300, 17), (2, 513, 65)]:
        for scaled in (False, True):
            x, wt, t, s, b = _case(m, k, n, m * k + n, dtype)
            s = s if scaled else None
            got = sparse_linear_triton(x, wt, t, s, b)
            want = sparse_linear_ref(x.double(), wt.double(), t, s, b.double())
            via_op = OP(x, wt, t, s, b)  # the op picks the kernel under the interpreter
            out.append({"dtype": str(dtype), "m": m, "k": k, "n": n, "scaled": scaled,
                        "err": float((got.double() - want).abs().max() / want.abs().max()),
                        "same_as_op": bool(torch.equal(got, via_op))})
print(json.dumps(out))
'''


def test_triton_kernel_matches_the_reference_in_the_interpreter() -> None:
    results = run_interpreted(KERNEL_CASES)
    assert_cases(results, 30, {"torch.float32": 1e-5, "torch.float16": 2e-3,
                                 "torch.bfloat16": 1e-2}, "same_as_op")
