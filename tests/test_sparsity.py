"""Activation-sparsity math (surgeon/sparsity.py) against numpy: thresholds zero the
requested share, WINA's score is |x_i| ||W_:,i||, the greedy allocation meets the
parameter-weighted target and spends it where the error grows least, and R-Sparse's
factors are the truncated SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon import sparsity


@pytest.mark.parametrize("share", [0.0, 0.25, 0.4, 0.5, 0.9])
def test_threshold_zeroes_the_requested_share(share: float) -> None:
    x = torch.randn(300, 40, generator=torch.Generator().manual_seed(0)).float() * 3 + 1
    t = sparsity.threshold_at(x.abs(), share)
    zeroed = float((x.abs().numpy() <= t).mean())
    assert abs(zeroed - share) <= 1 / x.numel()
    if share:  # the empirical quantile, not a fitted distribution's
        assert t == pytest.approx(np.sort(np.abs(x.numpy()).ravel())[round(share * x.numel()) - 1])


def test_wina_score_is_magnitude_times_column_norm() -> None:
    gen = torch.Generator().manual_seed(1)
    w, x = torch.randn(6, 10, generator=gen), torch.randn(5, 10, generator=gen)
    got = sparsity.scores(x, sparsity.column_norms(w))
    want = np.abs(x.numpy()) * np.linalg.norm(w.numpy(), axis=0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert sparsity.magnitude(w) is None


def test_greedy_meets_the_weighted_target_where_error_grows_least() -> None:
    grid = np.linspace(0, 0.95, 39).tolist()  # fine: the curves are linear in between
    flat = [0.0] * len(grid)  # a group that loses nothing when zeroed
    steep = [10 * s * s for s in grid]
    params = [100, 50, 100]
    levels = sparsity.greedy_allocation([steep, flat, steep], grid, params, 0.3)
    assert sum(p * s for p, s in zip(params, levels, strict=True)) / 250 \
        == pytest.approx(0.3, abs=1e-9)
    assert levels[1] == pytest.approx(0.95)  # the free group first, to the top
    assert levels[0] == pytest.approx(levels[2], abs=0.011)  # equal groups share the rest
    mild = [s * s for s in grid]  # convex: spreading beats concentrating
    spread = sparsity.greedy_allocation([mild, 4 * np.array(mild)], grid, [100, 100], 0.4)
    assert sum(spread) / 2 == pytest.approx(0.4) and spread[0] > spread[1] + 0.2


def test_kept_per_token() -> None:
    assert sparsity.kept_per_token(256, 0.4) == 256 - 102
    assert sparsity.kept_per_token(8, 0.99) == 1  # never none


def test_low_rank_is_the_truncated_svd() -> None:
    w = torch.randn(9, 14, generator=torch.Generator().manual_seed(3))
    a, b = sparsity.low_rank(w, 3)
    u, s, vt = np.linalg.svd(w.numpy().astype(np.float64), full_matrices=False)
    np.testing.assert_allclose((b @ a).numpy(), (u[:, :3] * s[:3]) @ vt[:3], atol=1e-10)
