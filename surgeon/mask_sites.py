"""Where activation-sparsity masks go (passes/sparsify.py): a `Group` is one mask, the
tensor it zeroes and the linears that read the result.

- shared criteria (TEAL, R-Sparse, LaRoSA): one mask per input tensor, read by every
  matched linear reading it (q/k/v share one, gate/up share one);
- per-linear criteria (WINA: the score depends on the reading weight): one mask each;
- at the activation (CATS): the act(gate(x)) output in front of `* up(x)` (or of the
  linear itself in a plain MLP), found by walking back from the matched linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from surgeon import targets
from surgeon.capture import Captured, LinearSite
from surgeon.diagnostics import UserError

ACTIVATIONS = {torch.ops.aten.silu.default, torch.ops.aten.gelu.default,
               torch.ops.aten.relu.default, torch.ops.aten.sigmoid.default,
               torch.ops.aten.tanh.default}
MUL = torch.ops.aten.mul.Tensor


@dataclass
class Group:
    """One mask: the tensor it zeroes, the nodes that will read the masked tensor instead,
    and the linear layers whose weight columns its zeros skip."""

    source: fx.Node
    consumers: list[fx.Node] = field(default_factory=list)
    sites: list[LinearSite] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(s.out_features * s.in_features for s in self.sites)

    @property
    def width(self) -> int:
        return self.sites[0].in_features


def _activation_source(site: LinearSite, node: fx.Node, by_node: dict[fx.Node, LinearSite],
                       what: str) -> tuple[fx.Node, fx.Node]:
    """(activation node, the node on the way to the linear that reads it): CATS's site."""
    x = node.args[0]
    act, consumer, other = None, node, None
    if isinstance(x, fx.Node) and x.target in ACTIVATIONS:
        act = x
    elif isinstance(x, fx.Node) and x.target == MUL:
        found = [a for a in x.args[:2] if isinstance(a, fx.Node) and a.target in ACTIVATIONS]
        if len(found) == 1:
            act, consumer = found[0], x
            other = next(a for a in x.args[:2] if a is not act)
    gate = by_node.get(act.args[0]) if act is not None else None
    up = by_node.get(other) if isinstance(other, fx.Node) else None
    if act is None or gate is None or (other is not None and (
            up is None or up is gate or up.nodes[0].args[0] is not gate.nodes[0].args[0])):
        raise UserError(f"{what}: the input of {site.path} is not act(linear(x)) or "
                        "act(gate(x)) * up(x)", "CATS thresholds a gated MLP's activation "
                        "(down_proj's input); use teal or wina for other linears")
    return act, consumer


def find_groups(captured: Captured, target: str, shared: bool, at_activation: bool,
                what: str) -> list[Group]:
    sites = captured.linear_sites()
    chosen = [sites[p] for p in targets.resolve(target, sites)]
    by_node = {n: s for s in sites.values() for n in s.nodes}
    found: dict[object, Group] = {}
    for site in chosen:
        for node in site.nodes:
            if at_activation:
                source, consumer = _activation_source(site, node, by_node, what)
                key: object = source
            else:
                source, consumer = node.args[0], node
                key = source if shared else (site.path, source)
            g = found.setdefault(key, Group(source))
            if consumer not in g.consumers:
                g.consumers.append(consumer)
            if site not in g.sites:
                g.sites.append(site)
    return list(found.values())
