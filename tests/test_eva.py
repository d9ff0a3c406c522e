"""EVA's rank redistribution: optimal against brute force, and the eigenvalue
ratios against numpy's PCA of the same data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from surgeon.eva import explained_variance_ratio, redistribute


def test_explained_variance_ratio_is_numpys_pca() -> None:
    x = np.random.default_rng(0).normal(size=(200, 6)) @ np.diag([5, 3, 2, 1, 0.5, 0.1])
    centred = x - x.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    ours = explained_variance_ratio(torch.from_numpy(centred.T @ centred / len(x)))
    np.testing.assert_allclose(ours.numpy(), s**2 / (s**2).sum(), rtol=1e-10)


def _brute_force(ratios: dict[str, np.ndarray], rank: int, rho: float,
                 limits: dict[str, int]) -> tuple[float, list[tuple[int, ...]]]:
    """Best total explained variance over every allocation with the budget spent."""
    caps = [min(round(rank * rho), limits[p]) for p in ratios]
    budget = min(rank * len(ratios), sum(caps))
    best, winners = -1.0, []
    for ranks in itertools.product(*(range(c + 1) for c in caps)):
        if sum(ranks) != budget:
            continue
        total = sum(float(r[:k].sum()) for r, k in zip(ratios.values(), ranks, strict=True))
        if total > best + 1e-12:
            best, winners = total, [ranks]
        elif abs(total - best) <= 1e-12:
            winners.append(ranks)
    return best, winners


@pytest.mark.parametrize(("seed", "rank", "rho"), [(0, 2, 2.0), (1, 3, 1.5), (2, 2, 3.0),
                                                   (3, 1, 1.0), (4, 2, 2.0)])
def test_redistribution_is_the_brute_force_optimum(seed: int, rank: int, rho: float) -> None:
    rng = np.random.default_rng(seed)
    ratios, limits = {}, {}
    for i in range(3):
        values = np.sort(rng.dirichlet(np.full(8, 0.3 + i)))[::-1]  # layers differ in spread
        ratios[f"layer{i}"] = values
        limits[f"layer{i}"] = 8 if i else 3  # one narrow layer caps below rank * rho
    ranks = redistribute({p: torch.from_numpy(v.copy()) for p, v in ratios.items()},
                         rank, rho, limits)
    best, winners = _brute_force(ratios, rank, rho, limits)
    assert tuple(ranks.values()) in winners
    got = sum(float(ratios[p][:k].sum()) for p, k in ranks.items())
    assert got == pytest.approx(best, rel=1e-12)


def test_rho_one_keeps_every_rank_and_rho_moves_rank_to_spread_inputs() -> None:
    flat = torch.full((8,), 1 / 8)  # inputs spread evenly: every direction matters
    steep = torch.tensor([0.9, 0.05, 0.02, 0.01, 0.01, 0.005, 0.003, 0.002])
    ratios = {"flat": flat, "steep": steep}
    assert redistribute(ratios, 2, 1.0, {"flat": 8, "steep": 8}) == {"flat": 2, "steep": 2}
    assert redistribute(ratios, 2, 2.0, {"flat": 8, "steep": 8}) == {"flat": 3, "steep": 1}
