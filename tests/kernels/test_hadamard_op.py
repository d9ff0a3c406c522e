"""surgeon::hadamard (surgeon/kernels/hadamard.py): the op equals the dense H_n of
surgeon/hadamard.py, passes torch.library's opcheck, is one opaque node under
torch.export, lowers to ONNX that onnxruntime runs alike, and differentiates as x H^T."""

from __future__ import annotations

import pytest
import torch

from surgeon.hadamard import hadamard_matrix
from surgeon.kernels.hadamard import OP, hadamard_ref, onnx_lowering
from tests.kernels.onnx_parity import assert_onnx_runs_like_torch


@pytest.mark.parametrize("n", [1, 16, 24, 768, 40 * 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_op_is_the_dense_matrix(n: int, dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(n)).to(dtype)
    want = x.double() @ hadamard_matrix(n).T
    got = OP(x)
    assert got.dtype == dtype and got.shape == x.shape
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 3e-2}[dtype]
    assert float((got.double() - want).abs().max()) <= tol * max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got, hadamard_ref(x), atol=0, rtol=0)


@pytest.mark.parametrize("op", [OP, torch.ops.surgeon.hadamard_t.default])
def test_opcheck(op) -> None:
    torch.library.opcheck(op, (torch.randn(3, 24, requires_grad=True),))


def test_gradient_is_h() -> None:
    x = torch.randn(4, 24, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 24, dtype=torch.float64)
    (OP(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, g @ hadamard_matrix(24), atol=1e-12, rtol=0)


class _Net(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OP(torch.relu(x)) * 2


def test_export_sees_one_op_and_onnx_runs_it() -> None:
    ops = assert_onnx_runs_like_torch(_Net(), OP, onnx_lowering, 48, tol=1e-5)
    assert "MatMul" in ops and not any("hadamard" in o for o in ops)



KERNEL_CASES = '''
import json, torch
from surgeon.hadamard import hadamard_matrix
from surgeon.kernels.hadamard import OP, hadamard_triton, kernel_takes
out = []
for n in (16, 64, 12 * 16, 20 * 32, 28 * 16, 172 * 16, 768):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(3, 2, n, generator=torch.Generator().manual_seed(n)).to(dtype)
        for transpose in (False, True):
            h = hadamard_matrix(n)
            want = x.double() @ (h if transpose else h.T)
            got = hadamard_triton(x, transpose)
            out.append({"n": n, "dtype": str(dtype), "transpose": transpose,
                        "shape": list(got.shape) == list(x.shape) and got.dtype == dtype,
                        "err": float((got.double() - want).abs().max() / want.abs().max()),
                        "op": bool(torch.equal(OP(x), hadamard_triton(x))),
                        "takes": kernel_takes(x)})
print(json.dumps(out))
'''


def test_triton_kernel_matches_the_dense_matrix_in_the_interpreter() -> None:
    from tests.kernels.interpreter import assert_cases, run_interpreted

    results = run_interpreted(KERNEL_CASES)
    assert_cases(results, 42, {"torch.float32": 1e-6, "torch.float16": 2e-3,
                               "torch.bfloat16": 1e-2}, "shape", "takes", "op")
