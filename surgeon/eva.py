"""EVA's rank redistribution (Paischer et al., 2024, "One Initialization to Rule
them All: Fine-tuning via Explained Variance Adaptation").

Each layer offers its top round(r * rho) principal components, scored by their
explained variance ratio (eigenvalue / total variance of the layer's inputs).
The r * L best components over all L layers win, so a layer whose inputs are
spread over many directions takes rank from one whose inputs are nearly
low-rank. rho = 1 gives every layer exactly r; a layer may end with rank 0
(it then gets no adapter, as in PEFT). Ties go to the earlier layer in target
order, so the result is deterministic.
"""

from __future__ import annotations

import torch


def explained_variance_ratio(covariance: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the input covariance over their sum, descending."""
    values = torch.linalg.eigvalsh(covariance.double()).flip(0).clamp_min(0)
    total = values.sum()
    return values / total if total > 0 else values


def redistribute(ratios: dict[str, torch.Tensor], rank: int, rho: float,
                 limits: dict[str, int]) -> dict[str, int]:
    """Ranks per layer: the rank * len(ratios) components of highest ratio,
    at most min(round(rank * rho), limits[layer]) from any one layer."""
    offers = []
    for order, (path, ratio) in enumerate(ratios.items()):
        cap = min(round(rank * rho), limits[path])
        offers += [(-float(v), order, i, path) for i, v in enumerate(ratio[:cap].tolist())]
    offers.sort()
    ranks = dict.fromkeys(ratios, 0)
    for *_, path in offers[: rank * len(ratios)]:
        ranks[path] += 1
    return ranks
