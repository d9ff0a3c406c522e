"""Fidelity of the compiled model against the original, on held-out inputs.

cosine: mean over real (non-padding) token positions of the cosine between the
original and compiled output vectors; rel_error: ||Y' - Y||_F / ||Y||_F over
the same positions; embedding_cosine: mean over samples of the cosine between
mean-pooled outputs (sentence embeddings, as sentence-transformers pools
MiniLM). All computed in float64.
"""

from __future__ import annotations

import torch
from torch import nn

from surgeon import ir
from surgeon.corpus import Batch
from surgeon.diagnostics import VerifyError


@torch.no_grad()
def fidelity(reference: nn.Module, compiled: nn.Module, batches: list[Batch]) -> dict[str, float]:
    cos_sum, cos_min, count, err2, ref2 = 0.0, 1.0, 0, 0.0, 0.0
    emb_sum, emb_count = 0.0, 0
    for batch in batches:
        y = reference(*batch.inputs).double()
        y2 = compiled(*batch.inputs).double()
        pooled = mean_pool(y, batch.mask), mean_pool(y2, batch.mask)
        emb = torch.nn.functional.cosine_similarity(*pooled, dim=-1)
        emb_sum, emb_count = emb_sum + float(emb.sum()), emb_count + emb.numel()
        if batch.mask is not None:
            y, y2 = y[batch.mask], y2[batch.mask]
        y, y2 = y.reshape(-1, y.shape[-1]), y2.reshape(-1, y2.shape[-1])
        cos = torch.nn.functional.cosine_similarity(y, y2, dim=-1)
        cos_sum += float(cos.sum())
        cos_min = min(cos_min, float(cos.min()))
        count += cos.numel()
        err2 += float((y2 - y).pow(2).sum())
        ref2 += float(y.pow(2).sum())
    return {"cosine": cos_sum / max(count, 1), "cosine_min": cos_min,
            "rel_error": (err2 / ref2) ** 0.5 if ref2 else 0.0,
            "embedding_cosine": emb_sum / max(emb_count, 1), "positions": float(count)}


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
