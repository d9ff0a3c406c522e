"""Low-rank approximation of a weight W (out x in) under the factorize methods
(catalogue: surgeon/methods/factorize.py, with the papers).

Each method picks row weights L and a right transform R, takes the SVD
M = L W R = U S V^T, keeps rank k, and undoes the transform:

    W' = L^-1 (U_k S_k^1/2)(S_k^1/2 V_k^T) R^-1  = second @ first

so the dropped sigma^2 of M are exactly the objective's truncation loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surgeon.calibration import LayerStats

ASVD_ALPHA = 0.5
_FLOOR = 1e-12  # scales below this (dead channels / rows) would blow up their inverse


@dataclass
class Decomposition:
    u: torch.Tensor  # float64
    s: torch.Tensor
    vh: torch.Tensor
    row_scale: torch.Tensor | None = None  # L as a vector
    col_scale: torch.Tensor | None = None  # R as a vector (asvd)
    chol: torch.Tensor | None = None  # R as a lower-triangular matrix (svd_llm)
    jitter: float = 0.0  # added to the Gram's diagonal, relative to its mean diagonal

    def dropped_energy(self, k: int) -> float:
        """Fraction of the objective's total sigma^2 that rank k drops."""
        e = self.s.pow(2)
        return float(e[k:].sum() / e.sum()) if e.sum() > 0 else 0.0

    def factors(self, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        root = self.s[:k].sqrt()
        first = root[:, None] * self.vh[:k]
        second = self.u[:, :k] * root[None, :]
        if self.col_scale is not None:
            first = first / self.col_scale[None, :]
        if self.chol is not None:  # first @ S^-1 by a triangular solve, never an inverse
            first = torch.linalg.solve_triangular(self.chol, first, upper=False, left=False)
        if self.row_scale is not None:
            second = second / self.row_scale[:, None]
        return first.to(dtype).contiguous(), second.to(dtype).contiguous()


def whitening(gram: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Lower Cholesky factor of the Gram, with the smallest jitter (of a 10x ladder)
    that makes it positive definite; returns (S, jitter relative to the mean diagonal)."""
    gram = gram.double()
    scale = float(gram.diagonal().mean()) or 1.0
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    for jitter in [0.0] + [10.0**e for e in range(-12, 1)]:
        chol, info = torch.linalg.cholesky_ex(gram + jitter * scale * eye)
        if int(info) == 0:
            return chol, jitter
    raise ValueError("input Gram is not positive definite even with jitter 1.0 x mean diagonal")


def decompose(method: str, weight: torch.Tensor, stats: LayerStats | None = None,
              alpha: float | None = None) -> Decomposition:
    """The named catalogue method's decomposition of `weight` (float64)."""
    from surgeon.methods.factorize import METHODS

    return METHODS[method].function(weight.detach().double(), stats, alpha)


def _svd(w: torch.Tensor, **transform: torch.Tensor | float | None) -> Decomposition:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return Decomposition(u, s, vh, **transform)  # type: ignore[arg-type]


def svd(w: torch.Tensor, stats: LayerStats | None, alpha: float | None) -> Decomposition:
    """L = I, R = I: min ||W - W'||_F (Eckart-Young)."""
    return _svd(w)


def asvd(w: torch.Tensor, stats: LayerStats | None, alpha: float | None) -> Decomposition:
    """R = diag(mean|x|^alpha): activation-aware scaling."""
    exponent = ASVD_ALPHA if alpha is None else alpha
    col = stats["abs_mean"].double().clamp_min(_FLOOR) ** exponent
    return _svd(w * col[None, :], col_scale=col)


def svd_llm(w: torch.Tensor, stats: LayerStats | None, alpha: float | None) -> Decomposition:
    """R = S with S S^T = X^T X: min ||(W - W')X^T||_F on the calibration inputs."""
    chol, jitter = whitening(stats["gram"])
    return _svd(w @ chol, chol=chol, jitter=jitter)


def fwsvd(w: torch.Tensor, stats: LayerStats | None, alpha: float | None) -> Decomposition:
    """L = diag(sqrt(Fisher row importance))."""
    row = stats["fisher_rows"].double().sqrt().clamp_min(_FLOOR)
    return _svd(row[:, None] * w, row_scale=row)


def output_rel_error(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> float:
    """||(W - W') X^T||_F / ||W X^T||_F from the Gram X^T X of inputs X."""
    w, d = weight.double(), weight.double() - approx.double()
    num = float(((d @ gram) * d).sum())
    den = float(((w @ gram) * w).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0


def allocate(costs: list[int], energies: list[torch.Tensor], caps: list[int],
             budget: int) -> list[int]:
    """Ranks minimising the summed dropped sigma^2 with sum(k_l * costs_l) <= budget.

    Greedy by loss removed per parameter, one rank at a time (SVD-LLM v2's
    loss-driven allocation): every layer starts at rank 1; the next unit goes
    to the layer whose next sigma^2 per parameter is largest and still fits.
    """
    import heapq

    ranks = [1] * len(costs)
    spent = sum(costs)
    heap = [(-float(e[1]) / c, i) for i, (e, c) in enumerate(zip(energies, costs, strict=True))
            if caps[i] > 1 and len(e) > 1]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        if spent + costs[i] > budget:
            continue  # this layer's next unit does not fit; cheaper layers still may
        ranks[i] += 1
        spent += costs[i]
        k = ranks[i]
        if k < caps[i] and k < len(energies[i]):
            heapq.heappush(heap, (-float(energies[i][k]) / costs[i], i))
    return ranks
