"""Hadamard matrices (surgeon/hadamard.py): every supported K at two m is a +-1 matrix
with H H^T = n I (checked in float64 and numpy), the fast transform equals the dense
matrix, and sizes without a construction are refused with the nearest supported ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon import hadamard


@pytest.mark.parametrize("k", hadamard.SUPPORTED_K)
@pytest.mark.parametrize("m", [0, 4])
def test_orthogonal_at_every_supported_k(k: int, m: int) -> None:
    n = k << m
    base = hadamard.base_matrix(k).numpy()
    assert base.shape == (k, k) and set(np.unique(base)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(base @ base.T, k * np.eye(k))  # integer-exact
    h = hadamard.hadamard_matrix(n).numpy()
    assert np.abs(h @ h.T - np.eye(n)).max() <= 1e-6
    assert np.abs(np.abs(h) - 1 / np.sqrt(n)).max() <= 1e-12


@pytest.mark.parametrize("n", [1, 2, 64, 256, 768, 12 * 2, 20 * 8, 140 * 4, 156 * 2, 172])
def test_fast_transform_equals_the_dense_matrix(n: int) -> None:
    x = torch.randn(3, 5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    dense = x @ hadamard.hadamard_matrix(n).T
    torch.testing.assert_close(hadamard.fast_hadamard(x), dense, atol=1e-12, rtol=0)
    again = hadamard.fast_hadamard(hadamard.fast_hadamard(x))  # H is symmetric only for K=1
    h = hadamard.hadamard_matrix(n)
    torch.testing.assert_close(again, x @ (h @ h).T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [156, 172])
def test_williamson_rows_satisfy_williamsons_identity(k: int) -> None:
    """The four circulants are symmetric +-1 matrices with A^2 + B^2 + C^2 + D^2 = 4n I
    (numpy, integers), the condition that makes the block matrix Hadamard."""
    n = k // 4
    blocks = []
    for row in hadamard._WILLIAMSON[k]:
        first = np.array([1 if c == "+" else -1 for c in row])
        assert first.size == n and (first[1:] == first[1:][::-1]).all()  # a_j = a_{n-j}
        blocks.append(np.stack([np.roll(first, i) for i in range(n)]))
    np.testing.assert_array_equal(sum(b @ b for b in blocks), 4 * n * np.eye(n, dtype=int))
    top = np.concatenate(blocks, 1)
    np.testing.assert_array_equal(hadamard.base_matrix(k).numpy()[:n], top)


def test_sizes_factor_with_the_largest_power_of_two() -> None:
    assert hadamard.factor(768) == (12, 64)  # bytellama's FFN
    assert hadamard.factor(256) == (1, 256)
    assert hadamard.factor(5120) == (20, 256)
    assert hadamard.factor(96) == (12, 8)
    assert hadamard.factor(7) is None and hadamard.factor(0) is None


def test_unsupported_sizes_are_refused_with_the_nearest() -> None:
    with pytest.raises(ValueError, match=r"size 100: .*nearest: 96 or 104.*'orthogonal'"):
        hadamard.check_size(100)
    with pytest.raises(ValueError, match="size 7"):
        hadamard.fast_hadamard(torch.zeros(7))
