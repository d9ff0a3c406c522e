"""Activation sparsity, the math (passes/sparsify.py does the graph):

- `threshold_at`: the score below which a share s of the calibration scores fall, so that
  `score > t` keeps 1 - s of them; an empirical quantile of the observed values, with no
  assumption about their distribution (TEAL fits none either);
- `magnitude` / `column_norms`: the score factors of TEAL and WINA (criteria catalogue);
- `error_curve`: a group's relative output error as its sparsity grows, measured on the
  calibration rows: sum over its linears of ||(x - mask(x)) R^T||^2 / ||x W^T||^2, with
  R = W (the zeroed inputs are lost) or R = W - W_r (R-Sparse: they pass through W_r);
- `greedy_allocation`: TEAL's greedy search, raising sparsity step by step where the
  error grows least, each step zeroing the same share of the targeted parameters (so a
  small linear takes a larger step), until the parameter-weighted mean meets the target;
- `low_rank`: R-Sparse's rank-r SVD factors of W.

"Training-Free Activation Sparsity in Large Language Models" (TEAL), Liu et al.,
arXiv:2408.14690; "WINA: Weight Informed Neuron Activation ...", Chen et al.,
arXiv:2505.19427; "R-Sparse: Rank-Aware Activation Sparsity ...", Zhang et al.,
arXiv:2504.19449.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# sparsities at which error curves are measured (linear in between); a group never
# goes above the last one
GRID = np.round(np.arange(0.0, 0.99, 0.03), 2).tolist() + [0.99]
CURVE_ROWS = 512  # calibration rows an error curve is measured on


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
    flat = score.flatten()
    k = round(sparsity * flat.numel())
    return 0.0 if k <= 0 else float(flat.kthvalue(k).values)


@dataclass
class Reader:
    """One linear reading a masked tensor: its weight, and what the zeroed entries lose
    (W itself, or W - W_r when a low-rank copy carries them)."""

    weight: torch.Tensor  # (out, in) float32
    lost: torch.Tensor  # (out, in) float32


def kept_per_token(width: int, sparsity: float) -> int:
    """LaRoSA's k: entries each token keeps at a sparsity (at least one)."""
    return max(1, width - round(sparsity * width))


def topk_dropped(rows: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The entries a per-token top-k mask zeroes (zeros elsewhere)."""
    k = kept_per_token(rows.shape[-1], sparsity)
    kth = rows.abs().topk(k, dim=-1).values[..., -1:]
    return torch.where(rows.abs() >= kth, torch.zeros_like(rows), rows)


def error_curve(rows: torch.Tensor, readers: Sequence[Reader], scale: torch.Tensor | None,
                multiplier: torch.Tensor | None = None, topk: bool = False) -> list[float]:
    """Relative output error of the group at each GRID sparsity. `multiplier` (CATS): the
    masked tensor is multiplied by it (up_proj's output) before the readers; `topk`
    (LaRoSA): the mask keeps each row's top-k instead of a threshold's survivors."""
    rows = rows[:CURVE_ROWS]
    mult = multiplier[:CURVE_ROWS] if multiplier is not None else None
    full = rows if mult is None else rows * mult
    energy = sum(float((full @ r.weight.T).pow(2).sum()) for r in readers)
    s = scores(rows, scale)
    curve = []
    for level in GRID:
        dropped = topk_dropped(rows, level) if topk else \
            torch.where(s > threshold_at(s, level), torch.zeros_like(rows), rows)
        if mult is not None:
            dropped = dropped * mult
        lost = sum(float((dropped @ r.lost.T).pow(2).sum()) for r in readers)
        curve.append(lost / max(energy, 1e-30))
    return curve


def greedy_allocation(curves: Sequence[Sequence[float]], params: Sequence[int],
                      target: float, step: float = 0.005) -> list[float]:
    """Per group sparsity with sum(p_g s_g) / sum(p_g) = target: each step raises one group
    by step * P / p_g (the same parameter share for every group), the one whose error grows
    least by it."""
    total = float(sum(params))
    levels = [0.0] * len(params)
    top = GRID[-1]
    if target > top:
        raise ValueError(f"a target above {top:.0%} cannot be allocated")

    def err(g: int, s: float) -> float:
        return float(np.interp(s, GRID, curves[g]))

    while (left := target * total - sum(p * s for p, s in zip(params, levels, strict=True))) \
            > 1e-9 * total:
        mass = min(step * total, left)
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
