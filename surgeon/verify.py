"""Fidelity of the compiled model against the original, on held-out inputs.

Each verify metric (catalogue: surgeon/methods/verify.py) is an accumulator
fed batch by batch with the original and compiled outputs in float64, so no
outputs are kept: cosine is the mean over real (non-padding) token positions
of the cosine between original and compiled output vectors, cosine_min the
smallest of those, rel_error ||Y' - Y||_F / ||Y||_F over the same positions,
embedding_cosine the mean over samples of the cosine between mean-pooled
outputs (sentence embeddings, as sentence-transformers pools MiniLM).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from surgeon import ir
from surgeon.corpus import Batch
from surgeon.diagnostics import VerifyError
from surgeon.methods.verify import METRICS


def _tokens(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(real tokens, features): padding positions dropped."""
    if mask is not None:
        y = y[mask]
    return y.reshape(-1, y.shape[-1])


class Cosine:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: torch.Tensor | None) -> None:
        cos = F.cosine_similarity(_tokens(y, mask), _tokens(y2, mask), dim=-1)
        self.total += float(cos.sum())
        self.count += cos.numel()

    def value(self) -> float:
        return self.total / max(self.count, 1)


class CosineMin:
    def __init__(self) -> None:
        self.lowest = 1.0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: torch.Tensor | None) -> None:
        cos = F.cosine_similarity(_tokens(y, mask), _tokens(y2, mask), dim=-1)
        self.lowest = min(self.lowest, float(cos.min()))

    def value(self) -> float:
        return self.lowest


class RelError:
    def __init__(self) -> None:
        self.err2, self.ref2 = 0.0, 0.0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: torch.Tensor | None) -> None:
        y, y2 = _tokens(y, mask), _tokens(y2, mask)
        self.err2 += float((y2 - y).pow(2).sum())
        self.ref2 += float(y.pow(2).sum())

    def value(self) -> float:
        return (self.err2 / self.ref2) ** 0.5 if self.ref2 else 0.0


class EmbeddingCosine(Cosine):
    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: torch.Tensor | None) -> None:
        cos = F.cosine_similarity(mean_pool(y, mask), mean_pool(y2, mask), dim=-1)
        self.total += float(cos.sum())
        self.count += cos.numel()


@torch.no_grad()
def fidelity(reference: nn.Module, compiled: nn.Module, batches: list[Batch]) -> dict[str, float]:
    """Every catalogue metric, plus the number of real token positions compared."""
    metrics = {m.name: m.function() for m in METRICS}
    positions = 0
    for batch in batches:
        y = reference(*batch.inputs).double()
        y2 = compiled(*batch.inputs).double()
        mask = batch.mask if batch.mask is not None and y.dim() >= 3 else None
        for metric in metrics.values():
            metric.update(y, y2, mask)
        positions += _tokens(y, mask).shape[0]
    return {**{name: m.value() for name, m in metrics.items()}, "positions": float(positions)}


def mean_pool(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean over real positions: (batch, ..., d) -> (batch, d)."""
    if y.dim() < 3:
        return y.reshape(y.shape[0], -1)
    if mask is None:
        return y.reshape(y.shape[0], -1, y.shape[-1]).mean(1)
    m = mask.to(y.dtype).unsqueeze(-1)
    return (y * m).sum(1) / m.sum(1).clamp_min(1)


def check(checks: tuple[ir.Verify, ...], measured: dict[str, float]) -> list[dict]:
    """Per-check results; raises VerifyError with the measured numbers if any fails."""
    results, failures = [], []
    for c in checks:
        value = measured[c.metric]
        ok = value >= c.threshold if c.op == ">=" else value <= c.threshold
        line = c.span.line if c.span else None
        results.append({"metric": c.metric, "op": c.op, "threshold": c.threshold,
                        "value": value, "passed": ok, "line": line})
        if not ok:
            at = f" (spec line {line})" if line else ""
            failures.append(f"{c.metric} = {value:.6f}, needs {c.op} {c.threshold:g}{at}")
    if failures:
        raise VerifyError(failures, measured)
    return results
