"""Activation sparsity, the math (passes/sparsify.py does the graph):

- `threshold_at`: the score below which a share s of the calibration scores fall, so that
  `score > t` keeps 1 - s of them; an empirical quantile of the observed values, with no
  assumption about their distribution (TEAL fits none either);
- `magnitude` / `column_norms`: the score factors of TEAL and WINA (criteria catalogue);
- `greedy_allocation`: TEAL's greedy search, raising sparsity step by step where the
  error grows least, each step zeroing the same share of the targeted parameters (so a
  small linear takes a larger step), until the parameter-weighted mean meets the target;
  each group's error curve is the caller's (passes/sparsify.py measures the model's
  output with that group alone sparsified), taken as additive across groups;
- `low_rank`: R-Sparse's rank-r SVD factors of W.

"Training-Free Activation Sparsity in Large Language Models" (TEAL), Liu et al.,
arXiv:2408.14690; "WINA: Weight Informed Neuron Activation ...", Chen et al.,
arXiv:2505.19427; "R-Sparse: Rank-Aware Activation Sparsity ...", Zhang et al.,
arXiv:2504.19449.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def magnitude(weight: torch.Tensor) -> None:
    """TEAL, CATS, R-Sparse: the score is |x| itself."""
    return None


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """WINA: |x_i| ||W_:,i||_2, the reading weight's column norms (float32)."""
    return weight.detach().double().norm(dim=0).float()


def scores(rows: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return rows.abs() if scale is None else rows.abs() * scale


def threshold_at(score: torch.Tensor, sparsity: float) -> float:
    """The k-th smallest score, k = round(s N): `score > t` zeroes k of the N (ties at t
    aside). 0 at sparsity 0 (exact zeros stay zero either way)."""
    return quantile(score.flatten().sort().values, sparsity)


def quantile(ascending: torch.Tensor, sparsity: float) -> float:
    """threshold_at on scores already sorted (a greedy search asks for many levels)."""
    k = round(sparsity * ascending.numel())
    return 0.0 if k <= 0 else float(ascending[k - 1])


def kept_per_token(width: int, sparsity: float) -> int:
    """LaRoSA's k: entries each token keeps at a sparsity (at least one)."""
    return max(1, width - round(sparsity * width))


def greedy_allocation(curves: Sequence[Sequence[float]], grid: Sequence[float],
                      params: Sequence[int], target: float, step: float = 0.01) -> list[float]:
    """Per group sparsity with sum(p_g s_g) / sum(p_g) = target. `curves[g]` is the model's
    output error with group g alone sparsified at each `grid` level (linear in between;
    errors are taken as additive). Each step raises one group by step * mean(p) / p_g (the
    same share of the parameters whichever group, so a small one takes a larger step):
    the one whose error grows least per parameter zeroed."""
    total, top = float(sum(params)), float(grid[-1])
    quantum = step * total / len(params)
    levels = [0.0] * len(params)
    if target > top:
        raise ValueError(f"a target above {top:.0%} cannot be allocated")

    def err(g: int, s: float) -> float:
        return float(np.interp(s, grid, curves[g]))

    while (left := target * total - sum(p * s for p, s in zip(params, levels, strict=True))) \
            > 1e-9 * total:
        mass = min(quantum, left)
        best, best_cost = None, float("inf")
        for g, p in enumerate(params):
            new = min(levels[g] + mass / p, top)
            if new <= levels[g]:
                continue
            cost = (err(g, new) - err(g, levels[g])) / ((new - levels[g]) * p)
            if cost < best_cost:
                best, best_cost = g, cost
        if best is None:  # every group is at the top
            break
        levels[best] = min(levels[best] + mass / params[best], top)
    return levels


def low_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with W_r = B A the best rank-r approximation of W (SVD, float64): A = V_r^T
    (r, in), B = U_r S_r (out, r)."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return vh[:rank], u[:, :rank] * s[:rank]
