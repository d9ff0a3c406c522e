"""Calibration statistics, collected once and shared by every pass.

Passes *request* what they need per linear layer before any pass runs; one run
over the calibration batches then accumulates all of it, without storing
activations (memory O(in^2) per layer for a Gram):

- "gram":         sum of x x^T over real tokens of the layer's input (float64)
- "abs_mean":     mean |x| per input channel (ASVD's activation scale)
- "mean":         mean x per input channel (to centre the Gram into a covariance: EVA)
- "fisher_rows":  per output row, the summed squared gradient of the weight
                  (FWSVD's importance), see `fisher` below
- "heldout_gram": the Gram on the held-out batches, to report each layer's
                  output error on samples it was not calibrated on

and per layer list (`request_blocks`), the hidden states at block boundaries
h_0 (input of block 0), h_1 (output of block 0), ...: the token-mean cosine
and angular distance arccos(cos)/pi between every pair (h_i, h_j) — what
Block Influence (ShortGPT) and the angular distance of Gromov et al. need.

Statistics describe the captured (original) graph: they are collected before
the first pass rewrites anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from surgeon.capture import Captured
from surgeon.corpus import Batch

KINDS = ("gram", "abs_mean", "mean", "fisher_rows", "heldout_gram")


@dataclass
class LayerStats:
    gram: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    x_sum: torch.Tensor | None = None
    fisher_rows: torch.Tensor | None = None
    heldout_gram: torch.Tensor | None = None
    tokens: int = 0

    @property
    def abs_mean(self) -> torch.Tensor | None:
        return None if self.abs_sum is None else self.abs_sum / max(self.tokens, 1)

    @property
    def mean(self) -> torch.Tensor | None:
        return None if self.x_sum is None else self.x_sum / max(self.tokens, 1)

    def covariance(self) -> torch.Tensor:
        """Sample covariance of the inputs, from the Gram and the mean (needs both)."""
        assert self.gram is not None and self.x_sum is not None
        n = max(self.tokens, 2)
        mu = self.x_sum / n
        return (self.gram - n * torch.outer(mu, mu)) / (n - 1)


@dataclass
class BlockStats:
    """Pairwise similarity of hidden states at block boundaries, summed over tokens."""

    cos_sum: torch.Tensor
    angular_sum: torch.Tensor
    tokens: int = 0

    @property
    def cos(self) -> torch.Tensor:
        """cos[i, j]: token-mean cosine between boundary states h_i and h_j."""
        return _symmetric(self.cos_sum) / max(self.tokens, 1)

    @property
    def angular(self) -> torch.Tensor:
        """angular[i, j]: token-mean arccos(cos(h_i, h_j)) / pi."""
        return _symmetric(self.angular_sum) / max(self.tokens, 1)


def _symmetric(upper: torch.Tensor) -> torch.Tensor:
    return upper + upper.T - torch.diag(upper.diagonal())


@dataclass
class CalibrationStats:
    captured: Captured
    wanted: dict[str, set[str]] = field(default_factory=dict)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    wanted_blocks: set[str] = field(default_factory=set)
    blocks: dict[str, BlockStats] = field(default_factory=dict)
    batches_seen: int = 0

    def request_blocks(self, layers: str) -> None:
        self.wanted_blocks.add(layers)

    def request(self, path: str, *kinds: str) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}")
        self.wanted.setdefault(path, set()).update(kinds)

    def __getitem__(self, path: str) -> LayerStats:
        return self.layers[path]

    def collect(self, progress: Callable[[], None] | None = None) -> None:
        """One run over the data for everything requested and not yet collected."""
        todo = {p: k - _have(self.layers.get(p)) for p, k in self.wanted.items()}
        todo = {p: k for p, k in todo.items() if k}
        lists = {name: _boundaries(self.captured, name)
                 for name in sorted(self.wanted_blocks - set(self.blocks))}
        if not todo and not lists:
            return
        for name, nodes in lists.items():
            zeros = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
            self.blocks[name] = BlockStats(zeros, zeros.clone())
        sites = self.captured.linear_sites()
        nodes = {n: p for p in todo for n in sites[p].nodes}
        for p in todo:
            self.layers.setdefault(p, LayerStats())
        calib = {p: k & {"gram", "abs_mean", "mean"} for p, k in todo.items()}
        fisher = [p for p, k in todo.items() if "fisher_rows" in k]
        outputs = {n: (name, i) for name, ns in lists.items() for i, n in enumerate(ns)}
        for batch in self.captured.data.calibration:
            states: dict[tuple[str, int], torch.Tensor] = {}
            _record(self.captured.gm, batch, {n: p for n, p in nodes.items() if calib[p]},
                    lambda p, x: self._add_inputs(p, x, calib[p]), outputs, states.__setitem__)
            for name, ns in lists.items():
                _add_pairs(self.blocks[name], [states[(name, i)] for i in range(len(ns))])
            if fisher:
                _fisher(self.captured, batch, {p: sites[p].weight for p in fisher}, self.layers,
                        seed=self.batches_seen)
            self.batches_seen += 1
            if progress:
                progress()
        held = {n: p for n, p in nodes.items() if "heldout_gram" in todo[p]}
        for batch in self.captured.data.heldout if held else []:
            _record(self.captured.gm, batch, held, self._add_heldout)

    def _add_inputs(self, path: str, x: torch.Tensor, kinds: set[str]) -> None:
        s = self.layers[path]
        if "gram" in kinds:
            s.gram = _acc(s.gram, x.T @ x)
        if "abs_mean" in kinds:
            s.abs_sum = _acc(s.abs_sum, x.abs().sum(0))
        if "mean" in kinds:
            s.x_sum = _acc(s.x_sum, x.sum(0))
        s.tokens += x.shape[0]

    def _add_heldout(self, path: str, x: torch.Tensor) -> None:
        s = self.layers[path]
        s.heldout_gram = _acc(s.heldout_gram, x.T @ x)


def _have(s: LayerStats | None) -> set[str]:
    if s is None:
        return set()
    present = {"gram": s.gram, "abs_mean": s.abs_sum, "mean": s.x_sum,
               "fisher_rows": s.fisher_rows,
               "heldout_gram": s.heldout_gram}
    return {k for k, v in present.items() if v is not None}


def _acc(total: torch.Tensor | None, add: torch.Tensor) -> torch.Tensor:
    return add if total is None else total + add


def _tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Layer input -> (real tokens, features) in float64; padding positions dropped."""
    if mask is not None and x.dim() >= 3 and x.shape[:2] == mask.shape:
        x = x[mask]
    return x.reshape(-1, x.shape[-1]).double()


class _Recorder(fx.Interpreter):
    """Runs the graph; hands watched linears' inputs and watched nodes' outputs to callbacks
    as (real tokens, features) float64 matrices."""

    def __init__(self, gm: fx.GraphModule, watch: dict[fx.Node, Any], sink: Callable,
                 watch_out: dict[fx.Node, Any], sink_out: Callable, mask: torch.Tensor | None):
        super().__init__(gm)
        self.watch, self.sink, self.watch_out, self.sink_out = watch, sink, watch_out, sink_out
        self.mask = mask

    def run_node(self, n: fx.Node):
        if n in self.watch:
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.sink(self.watch[n], _tokens(args[0].detach(), self.mask))
        result = super().run_node(n)
        if n in self.watch_out:
            self.sink_out(self.watch_out[n], _tokens(result.detach(), self.mask))
        return result


@torch.no_grad()
def _record(gm: fx.GraphModule, batch: Batch, watch: dict[fx.Node, Any], sink: Callable,
            watch_out: dict[fx.Node, Any] | None = None, sink_out: Callable | None = None) -> None:
    if watch or watch_out:
        _Recorder(gm, watch, sink, watch_out or {}, sink_out, batch.mask).run(*batch.inputs)


def _boundaries(captured: Captured, layers: str) -> list[fx.Node]:
    from surgeon.blocks import find_blocks

    blocks = find_blocks(captured, layers)
    return [blocks[0].input, *(b.output for b in blocks)]


def _add_pairs(stats: BlockStats, states: list[torch.Tensor]) -> None:
    """Accumulate cos and arccos(cos)/pi over tokens for every pair of boundary states."""
    units = [torch.nn.functional.normalize(h, dim=-1) for h in states]
    for i in range(len(units)):
        for j in range(i, len(units)):
            cos = (units[i] * units[j]).sum(-1).clamp(-1.0, 1.0)
            stats.cos_sum[i, j] += cos.sum()  # upper triangle; the properties symmetrise
            stats.angular_sum[i, j] += (torch.arccos(cos) / torch.pi).sum()
    stats.tokens += states[0].shape[0]


def _fisher(captured: Captured, batch: Batch, weights: dict[str, str],
            layers: dict[str, LayerStats], seed: int) -> None:
    """Squared gradients of the weights under targets sampled around the model's output.

    For a model without a task head the natural loss is the reconstruction of the
    original output, but its gradient is exactly zero at the original weights. We
    use the true Fisher of a Gaussian observation model instead: targets
    y0 + eps with eps ~ N(0, I) give the gradient J^T eps, whose second moment is
    J^T J. Gradients are taken per batch (the empirical-Fisher practice of FWSVD).
    """
    gm = captured.gm
    params = {p: gm.get_parameter(w) for p, w in weights.items()}
    flags = {p: t.requires_grad for p, t in params.items()}
    for t in params.values():
        t.requires_grad_(True)
        t.grad = None
    try:
        with torch.enable_grad():
            y = gm(*batch.inputs)
            gen = torch.Generator().manual_seed(1000 + seed)
            eps = torch.randn(y.shape, generator=gen, dtype=y.dtype)
            if batch.mask is not None and y.dim() >= 3:
                eps = eps * batch.mask.unsqueeze(-1).to(y.dtype)
            (y * eps).sum().backward()
        for p, t in params.items():
            rows = t.grad.double().pow(2).sum(1)
            layers[p].fisher_rows = _acc(layers[p].fisher_rows, rows)
    finally:
        for p, t in params.items():
            t.grad = None
            t.requires_grad_(flags[p])
