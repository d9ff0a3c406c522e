"""surgeon::sparsify_topk (surgeon/kernels/sparsify_topk.py): each token keeps its k
largest |x| (numpy argsort), ties with the k-th value are kept, opcheck passes, the
gradient is the mask, and the ONNX lowering runs alike in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon.kernels.sparsify_topk import OP, onnx_lowering
from tests.kernels.onnx_parity import assert_onnx_runs_like_torch


@pytest.mark.parametrize("k", [1, 5, 24])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_each_token_keeps_its_k_largest(k: int, dtype: torch.dtype) -> None:
    x = torch.randn(3, 4, 24, generator=torch.Generator().manual_seed(k)).to(dtype)
    xn = x.double().numpy()
    order = np.argsort(-np.abs(xn), axis=-1, kind="stable")[..., :k]
    want = np.zeros_like(xn)
    np.put_along_axis(want, order, np.take_along_axis(xn, order, -1), -1)
    got = OP(x, k)
    if dtype != torch.bfloat16:  # bfloat16 rounding makes ties; those keep more
        np.testing.assert_array_equal(got.double().numpy(), want)
    assert ((got != 0).sum(-1) >= k).all() and got.dtype == dtype


def test_ties_with_the_kth_value_are_kept() -> None:
    x = torch.tensor([[0.5, -0.5, 0.25, 1.0]])
    assert OP(x, 2).tolist() == [[0.5, -0.5, 0.0, 1.0]]


def test_opcheck_and_gradient() -> None:
    torch.library.opcheck(OP, (torch.randn(3, 8, requires_grad=True), 3))
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 16, dtype=torch.float64)
    (OP(x, 5) * g).sum().backward()
    torch.testing.assert_close(x.grad, g * (OP(x.detach(), 5) != 0), atol=0, rtol=0)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(OP(x, 12))


def test_export_sees_one_op_and_onnx_runs_it() -> None:
    ops = assert_onnx_runs_like_torch(_Net(), OP, onnx_lowering, 32, tol=1e-5)
    assert "TopK" in ops
