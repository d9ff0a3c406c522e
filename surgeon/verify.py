"""Fidelity of the compiled model against the original, on held-out inputs.

Each verify metric (catalogue: surgeon/methods/verify.py) is an accumulator
fed batch by batch with the original and compiled outputs in float64, so no
outputs are kept: cosine is the mean over real (non-padding) token positions
of the cosine between original and compiled output vectors, cosine_min the
smallest of those, rel_error ||Y' - Y||_F / ||Y||_F over the same positions,
embedding_cosine the mean over samples of the cosine between mean-pooled
outputs (sentence embeddings, as sentence-transformers pools MiniLM).

Causal language models (output `logits`) also get the language-model metrics.
Position t predicts token t+1: perplexity is exp of the mean next-token NLL over
every real token that follows a real token (exactly what transformers' `labels=`
loss averages, padding labelled -100), for the original and the compiled model;
kl the mean over real positions of KL(p_original || p_compiled) of the
next-token distributions, top1 the share of real positions where both models
rank the same next token first.
"""

from __future__ import annotations

import math

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


Mask = torch.Tensor | None


class Cosine:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        cos = F.cosine_similarity(_tokens(y, mask), _tokens(y2, mask), dim=-1)
        self.total += float(cos.sum())
        self.count += cos.numel()

    def value(self) -> float:
        return self.total / max(self.count, 1)


class CosineMin:
    def __init__(self) -> None:
        self.lowest = 1.0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        cos = F.cosine_similarity(_tokens(y, mask), _tokens(y2, mask), dim=-1)
        self.lowest = min(self.lowest, float(cos.min()))

    def value(self) -> float:
        return self.lowest


class RelError:
    def __init__(self) -> None:
        self.err2, self.ref2 = 0.0, 0.0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        y, y2 = _tokens(y, mask), _tokens(y2, mask)
        self.err2 += float((y2 - y).pow(2).sum())
        self.ref2 += float(y.pow(2).sum())

    def value(self) -> float:
        return (self.err2 / self.ref2) ** 0.5 if self.ref2 else 0.0


class EmbeddingCosine(Cosine):
    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        cos = F.cosine_similarity(mean_pool(y, mask), mean_pool(y2, mask), dim=-1)
        self.total += float(cos.sum())
        self.count += cos.numel()


def next_token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: Mask) -> torch.Tensor:
    """NLL of each real token after a real token, predicted from the position before it."""
    target = ids[:, 1:]
    keep = torch.ones_like(target, dtype=torch.bool) if mask is None else mask[:, 1:] & mask[:, :-1]
    return F.cross_entropy(logits[:, :-1][keep], target[keep], reduction="none")


class Perplexity:
    """The compiled model's perplexity (`original=True`: the original's)."""

    def __init__(self, original: bool = False) -> None:
        self.original, self.nll, self.count = original, 0.0, 0

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        assert ids is not None
        nll = next_token_nll(y if self.original else y2, ids, mask)
        self.nll += float(nll.sum())
        self.count += nll.numel()

    def value(self) -> float:
        return math.exp(self.nll / self.count) if self.count else math.nan


class PerplexityIncrease:
    def __init__(self) -> None:
        self.before, self.after = Perplexity(original=True), Perplexity()

    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        self.before.update(y, y2, mask, ids)
        self.after.update(y, y2, mask, ids)

    def value(self) -> float:
        return self.after.value() / self.before.value() - 1


class KL(Cosine):
    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        logp, logq = F.log_softmax(_tokens(y, mask), -1), F.log_softmax(_tokens(y2, mask), -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        self.total += float(kl.sum())
        self.count += kl.numel()


class Top1(Cosine):
    def update(self, y: torch.Tensor, y2: torch.Tensor, mask: Mask, ids: Mask) -> None:
        same = _tokens(y, mask).argmax(-1) == _tokens(y2, mask).argmax(-1)
        self.total += float(same.sum())
        self.count += same.numel()


@torch.no_grad()
def fidelity(reference: nn.Module, compiled: nn.Module, batches: list[Batch],
             output: str = "output") -> dict[str, float]:
    """Every catalogue metric that applies to the output (the language-model ones to
    `logits`), the original model's perplexity (`perplexity_original`, logits only) and
    the number of real token positions compared."""
    metrics = {m.name: m.function() for m in METRICS
               if m.extra.get("output", output) == output}
    if output == "logits":
        metrics["perplexity_original"] = Perplexity(original=True)
    positions = 0
    for batch in batches:
        y = reference(*batch.inputs).double()
        y2 = compiled(*batch.inputs).double()
        mask = batch.mask if batch.mask is not None and y.dim() >= 3 else None
        ids = batch.inputs[0] if output == "logits" else None
        for metric in metrics.values():
            metric.update(y, y2, mask, ids)
        positions += _tokens(y, mask).shape[0]
    return {**{name: m.value() for name, m in metrics.items()}, "positions": float(positions)}


def applicable(metric: str, output: str) -> bool:
    return METRICS[metric].extra.get("output", output) == output


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
