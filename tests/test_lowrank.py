"""Low-rank math against independent references: SVD-LLM's truncation theorem,
the other methods' weighted objectives, non-PD Grams, and budget allocation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from surgeon.calibration import LayerStats
from surgeon.lowrank import allocate, decompose, output_rel_error, whitening


def _layer(seed: int, out_f: int = 24, in_f: int = 16, n: int = 200):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_f, in_f))
    x = rng.standard_normal((n, in_f)) * rng.uniform(0.1, 5.0, in_f)  # uneven channel scales
    return torch.from_numpy(w), torch.from_numpy(x)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_svd_llm_truncation_loss_is_the_dropped_whitened_spectrum(k: int) -> None:
    w, x = _layer(k)
    gram = x.T @ x
    dec = decompose("svd_llm", w, LayerStats({"gram": gram}))
    first, second = dec.factors(k, torch.float64)
    delta = (w - second @ first).numpy()
    s_chol = np.linalg.cholesky(gram.numpy())  # independent whitening factor
    sigma = np.linalg.svd(w.numpy() @ s_chol, compute_uv=False)
    dropped = np.sum(sigma[k:] ** 2)
    assert np.linalg.norm(delta @ s_chol) ** 2 == pytest.approx(dropped, rel=1e-6)
    # ... which is the layer's output error on the calibration inputs themselves
    assert np.linalg.norm(delta @ x.numpy().T) ** 2 == pytest.approx(dropped, rel=1e-6)
    assert dec.jitter == 0.0


def test_svd_llm_beats_plain_svd_on_output_error() -> None:
    w, x = _layer(3)
    gram = x.T @ x
    errs = {}
    for method in ("svd", "svd_llm"):
        first, second = decompose(method, w, LayerStats({"gram": gram})).factors(5, torch.float64)
        errs[method] = output_rel_error(w, second @ first, gram)
    assert errs["svd_llm"] < errs["svd"]


@pytest.mark.parametrize("method", ["asvd", "fwsvd"])
def test_weighted_methods_drop_exactly_their_weighted_spectrum(method: str) -> None:
    w, x = _layer(7)
    rng = np.random.default_rng(1)
    stats = LayerStats({"abs_mean": x.abs().sum(0),
                        "fisher_rows": torch.from_numpy(rng.uniform(0.01, 10, w.shape[0]))},
                       tokens=x.shape[0])
    k = 6
    first, second = decompose(method, w, stats, alpha=0.5).factors(k, torch.float64)
    delta = (w - second @ first).numpy()
    if method == "asvd":
        scale = (x.abs().mean(0).numpy()) ** 0.5
        weighted, ref = delta * scale[None, :], w.numpy() * scale[None, :]
    else:
        scale = np.sqrt(stats["fisher_rows"].numpy())
        weighted, ref = delta * scale[:, None], w.numpy() * scale[:, None]
    sigma = np.linalg.svd(ref, compute_uv=False)
    assert np.linalg.norm(weighted) ** 2 == pytest.approx(np.sum(sigma[k:] ** 2), rel=1e-6)


def test_non_positive_definite_gram_gets_the_smallest_sufficient_jitter() -> None:
    w, x = _layer(5)
    x = torch.cat([x, x[:, :3]], dim=1)  # duplicate input channels: singular Gram
    w = torch.cat([w, w[:, :3]], dim=1)
    gram = x.T @ x
    assert np.linalg.matrix_rank(gram.numpy()) < gram.shape[0]
    chol, jitter = whitening(gram)
    assert jitter > 0
    scale = float(gram.diagonal().mean())
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    torch.testing.assert_close(chol @ chol.T, gram + jitter * scale * eye)
    smaller = torch.linalg.cholesky_ex(gram + jitter / 10 * scale * eye)[1]
    assert jitter == 1e-12 or int(smaller) != 0  # one rung lower on the ladder fails
    dec = decompose("svd_llm", w, LayerStats({"gram": gram}))
    first, second = dec.factors(8, torch.float64)
    assert torch.isfinite(first).all() and torch.isfinite(second).all()
    plain = decompose("svd", w).factors(8, torch.float64)
    assert output_rel_error(w, second @ first, gram) < output_rel_error(
        w, plain[1] @ plain[0], gram)


def _loss(energies: list[np.ndarray], ranks: list[int]) -> float:
    return float(sum(e[k:].sum() for e, k in zip(energies, ranks, strict=True)))


def test_budget_allocation_matches_brute_force_and_beats_uniform() -> None:
    rng = np.random.default_rng(0)
    energies = [np.sort(rng.exponential(scale, 8))[::-1] ** 2 for scale in (0.2, 1.0, 5.0)]
    costs, caps = [10, 10, 10], [8, 8, 8]
    for budget in (30, 60, 120, 200):
        ranks = allocate(costs, [torch.from_numpy(e.copy()) for e in energies], caps, budget)
        assert sum(k * c for k, c in zip(ranks, costs, strict=True)) <= budget
        feasible = [r for r in itertools.product(range(1, 9), repeat=3)
                    if sum(k * c for k, c in zip(r, costs, strict=True)) <= budget]
        best = min(_loss(energies, list(r)) for r in feasible)
        assert _loss(energies, ranks) == pytest.approx(best)
        uniform = [budget // sum(costs)] * 3
        assert _loss(energies, ranks) <= _loss(energies, uniform)


def test_budget_allocation_with_unequal_costs_stays_within_budget() -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        n = int(rng.integers(2, 6))
        costs = [int(c) for c in rng.integers(5, 50, n)]
        energies = [torch.from_numpy(np.sort(rng.exponential(1, 30))[::-1].copy() ** 2)
                    for _ in range(n)]
        caps = [int(c) for c in rng.integers(2, 30, n)]
        budget = int(sum(costs) * rng.uniform(1, 20))
        ranks = allocate(costs, energies, caps, budget)
        assert sum(k * c for k, c in zip(ranks, costs, strict=True)) <= budget, trial
        assert all(1 <= k <= max(cap, 1) for k, cap in zip(ranks, caps, strict=True))
        share = budget / sum(costs)  # the same rank fraction of the budget everywhere
        uniform = [max(1, min(cap, int(share))) for cap in caps]
        if sum(k * c for k, c in zip(uniform, costs, strict=True)) <= budget:
            assert _loss([e.numpy() for e in energies], ranks) <= _loss(
                [e.numpy() for e in energies], uniform) + 1e-9
