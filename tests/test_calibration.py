"""The shared statistics collector equals a direct computation on activations
stored with forward hooks on the eager model, and runs over the data once. On the
2-layer tiny BERT (MiniLM's layout, narrower)."""

from __future__ import annotations

import pytest
import torch
from activations import stored_inputs

from surgeon import ir
from surgeon.calibration import CalibrationStats
from surgeon.capture import capture, entry_point
from surgeon.corpus import text_data

PATHS = ("encoder.layer.0.attention.self.value", "encoder.layer.1.output.dense")


@pytest.fixture(scope="module")
def collected(tiny_bert):
    data = text_data(tiny_bert.tokenizer, ir.Calibrate(samples=24, seqlen=48, seed=2),
                     tiny_bert.max_positions)
    entry, prefix, name = entry_point(tiny_bert.module, text=True)
    captured = capture(entry, data, prefix, name)
    stats = CalibrationStats(captured)
    for p in PATHS:
        stats.request(p, "gram", "abs_mean", "fisher_rows", "heldout_gram")
    stats.collect()
    return entry, captured, stats


def _stored_inputs(entry, tiny_bert, batches, path: str) -> torch.Tensor:
    return stored_inputs(entry, tiny_bert.module.get_submodule(path), batches)


@pytest.mark.parametrize("path", PATHS)
def test_collector_equals_stored_activations(collected, tiny_bert, path: str) -> None:
    entry, captured, stats = collected
    x = _stored_inputs(entry, tiny_bert, captured.data.calibration, path)
    s = stats[path]
    assert s.tokens == x.shape[0] == int(sum(b.mask.sum() for b in captured.data.calibration))
    torch.testing.assert_close(s["gram"], x.T @ x, rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(s["abs_mean"], x.abs().mean(0), rtol=1e-9, atol=1e-9)
    held = _stored_inputs(entry, tiny_bert, captured.data.heldout, path)
    torch.testing.assert_close(s["heldout_gram"], held.T @ held, rtol=1e-9, atol=1e-7)


def test_fisher_rows_equal_direct_autograd(collected, tiny_bert) -> None:
    entry, captured, stats = collected
    path = PATHS[0]
    weight = tiny_bert.module.get_submodule(path).weight
    total = torch.zeros(weight.shape[0], dtype=torch.float64)
    for i, batch in enumerate(captured.data.calibration):
        weight.grad = None
        y = entry(*batch.inputs)
        eps = torch.randn(y.shape, generator=torch.Generator().manual_seed(1000 + i))
        (y * eps * batch.mask.unsqueeze(-1)).sum().backward()
        total += weight.grad.double().pow(2).sum(1)
    weight.grad = None
    torch.testing.assert_close(stats[path]["fisher_rows"], total, rtol=1e-4, atol=0)


def test_collect_runs_once_for_everything_requested(collected) -> None:
    _, captured, stats = collected
    seen = stats.batches_seen
    stats.collect()  # nothing new requested: no second run over the data
    assert stats.batches_seen == seen == len(captured.data.calibration)
