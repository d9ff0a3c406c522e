"""Calibration statistics, taken on the graph as it stands when a step runs.

Passes *request* observers (surgeon/observers.py) per linear layer, or block
statistics per layer list; `collect` then runs the calibration batches through
the graph once for everything requested and not yet collected. The driver
starts a fresh `CalibrationStats` after any step that changed what later
layers see (surgeon/driver.py), so a `factorize ... method svd_llm` after
`prune layers` whitens with the Grams of the pruned model; consecutive steps
that see the same graph share one pass over the data.

Block statistics are the hidden states at block boundaries h_0 (input of
block 0), h_1 (output of block 0), ...: the token-mean cosine and angular
distance arccos(cos)/pi between every pair (h_i, h_j), what Block Influence
(ShortGPT) and the angular distance of Gromov et al. need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from surgeon.capture import Captured
from surgeon.corpus import Batch
from surgeon.observers import OBSERVERS, ROWS_CAP


@dataclass
class LayerStats:
    """One linear layer's accumulated observers; `stats[name]` is the finished value."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: int = 0

    def __getitem__(self, name: str) -> torch.Tensor:
        return OBSERVERS[name].finish(self.sums[name], self.tokens)

    def __contains__(self, name: object) -> bool:
        return name in self.sums

    def add(self, name: str, value: torch.Tensor) -> None:
        if name not in self.sums:
            self.sums[name] = value[:ROWS_CAP] if OBSERVERS[name].reduce == "rows" else value
        elif OBSERVERS[name].reduce == "rows":
            room = ROWS_CAP - self.sums[name].shape[0]
            if room > 0:
                self.sums[name] = torch.cat([self.sums[name], value[:room]])
        else:
            self.sums[name] = self.sums[name] + value

    def covariance(self) -> torch.Tensor:
        """Sample covariance of the inputs, from the Gram and the mean (needs both)."""
        n = max(self.tokens, 2)
        mu = self.sums["mean"] / n
        return (self.sums["gram"] - n * torch.outer(mu, mu)) / (n - 1)


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

    def request(self, path: str, *names: str) -> None:
        for name in names:
            if OBSERVERS[name].site == "blocks":
                raise ValueError(f"{name!r} is requested per layer list (request_blocks)")
        self.wanted.setdefault(path, set()).update(names)

    def __getitem__(self, path: str) -> LayerStats:
        return self.layers[path]

    def pending(self) -> bool:
        return any(self._todo().values()) or bool(self.wanted_blocks - set(self.blocks))

    def _todo(self) -> dict[str, set[str]]:
        have = {p: set(s.sums) for p, s in self.layers.items()}
        return {p: k - have.get(p, set()) for p, k in self.wanted.items()}

    def collect(self, progress: Callable[[], None] | None = None) -> None:
        """One run over the data for everything requested and not yet collected."""
        todo = {p: k for p, k in self._todo().items() if k}
        lists = {name: _boundaries(self.captured, name)
                 for name in sorted(self.wanted_blocks - set(self.blocks))}
        if not todo and not lists:
            return
        for name, nodes in lists.items():
            zeros = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
            self.blocks[name] = BlockStats(zeros, zeros.clone())
        sites = self.captured.linear_sites()
        for p in todo:
            self.layers.setdefault(p, LayerStats())
        by_site = {site: {p: [o for o in OBSERVERS.on(site) if o.name in k]
                          for p, k in todo.items()}
                   for site in ("input", "heldout_input", "weight_grad")}
        inputs = {n: p for p, obs in by_site["input"].items() if obs for n in sites[p].nodes}
        grads = {p: sites[p].weight for p, obs in by_site["weight_grad"].items() if obs}
        outputs = {n: (name, i) for name, ns in lists.items() for i, n in enumerate(ns)}
        for batch in self.captured.data.calibration:
            states: dict[tuple[str, int], torch.Tensor] = {}
            _record(self.captured.gm, batch, inputs,
                    lambda p, x: self._observe(p, x, by_site["input"][p], count=True),
                    outputs, states.__setitem__)
            for name, ns in lists.items():
                _add_pairs(self.blocks[name], [states[(name, i)] for i in range(len(ns))])
            if grads:
                _gradients(self.captured, batch, grads, seed=self.batches_seen,
                           sink=lambda p, g: self._observe(p, g, by_site["weight_grad"][p]))
            self.batches_seen += 1
            if progress:
                progress()
        held = {n: p for p, obs in by_site["heldout_input"].items() if obs
                for n in sites[p].nodes}
        for batch in self.captured.data.heldout if held else []:
            _record(self.captured.gm, batch, held,
                    lambda p, x: self._observe(p, x, by_site["heldout_input"][p]))

    def _observe(self, path: str, x: torch.Tensor, observers: list, count: bool = False) -> None:
        s = self.layers[path]
        for o in observers:
            s.add(o.name, o.update(x))
        if count:
            s.tokens += x.shape[0]


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


def _gradients(captured: Captured, batch: Batch, weights: dict[str, str], seed: int,
               sink: Callable[[str, torch.Tensor], None]) -> None:
    """Weight gradients under targets sampled around the model's output.

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
            sink(p, t.grad)
    finally:
        for p, t in params.items():
            t.grad = None
            t.requires_grad_(flags[p])


def node_input_rows(captured: Captured, nodes: list[fx.Node]) -> dict[fx.Node, torch.Tensor]:
    """The `input_rows` sample (every ROW_STRIDE-th real token, at most ROWS_CAP rows,
    float32) of each node's first input over the calibration batches, as the graph runs
    now: for statistics at ops that are not linears (a mask surgeon inserted)."""
    rows: dict[fx.Node, LayerStats] = {n: LayerStats() for n in nodes}
    for batch in captured.data.calibration:
        _record(captured.gm, batch, {n: n for n in nodes},
                lambda n, x: rows[n].add("input_rows", OBSERVERS["input_rows"].update(x)))
    return {n: s["input_rows"] for n, s in rows.items()}
