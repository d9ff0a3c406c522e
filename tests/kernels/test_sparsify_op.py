"""surgeon::sparsify (surgeon/kernels/sparsify.py): the op equals a numpy mask
x * (|x| s > t), passes torch.library's opcheck, passes gradients only through kept
entries, is one opaque node under torch.export, and lowers to ONNX that onnxruntime runs
alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon.kernels.sparsify import OP, onnx_lowering
from tests.kernels.onnx_parity import assert_onnx_runs_like_torch


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_op_is_the_numpy_mask(scaled: bool, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 24, generator=gen).to(dtype)
    s = torch.rand(24, generator=gen) + 0.5 if scaled else None
    t = torch.tensor([0.6])
    xn = x.double().numpy()
    wide = np.float64 if dtype == torch.float64 else np.float32  # scores: float32 or wider
    score = np.abs(xn).astype(wide) * (s.numpy().astype(wide) if scaled else wide(1))
    want = np.where(score > wide(0.6), xn, 0.0)
    got = OP(x, t, s)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_array_equal(got.double().numpy(), want)
    assert 0 < (want == 0).mean() < 1


def test_ties_at_the_threshold_are_zeroed() -> None:
    x = torch.tensor([[-0.5, 0.5, 0.625, -1.0]])
    assert OP(x, torch.tensor([0.5]), None).tolist() == [[0.0, 0.0, 0.625, -1.0]]


def test_opcheck() -> None:
    torch.library.opcheck(OP, (torch.randn(3, 8, requires_grad=True), torch.tensor([0.3]),
                               torch.rand(8) + 0.5))
    torch.library.opcheck(OP, (torch.randn(3, 8, requires_grad=True), torch.tensor([0.3]),
                               None))


def test_gradient_is_the_mask() -> None:
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 16, dtype=torch.float64)
    (OP(x, torch.tensor([0.7]), None) * g).sum().backward()
    torch.testing.assert_close(x.grad, g * (x.detach().abs() > 0.7), atol=0, rtol=0)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor([0.4]), requires_grad=False)
        self.s = torch.nn.Parameter(torch.rand(32, generator=torch.Generator().manual_seed(2))
                                    + 0.5, requires_grad=False)
        self.lin = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(OP(x, self.t, self.s))


def test_export_sees_one_op_and_onnx_runs_it() -> None:
    ops = assert_onnx_runs_like_torch(_Net(), OP, onnx_lowering, 32, tol=1e-5)
    assert {"Abs", "Greater", "Where"} <= ops and not any("sparsify" in o for o in ops)
