"""Normalisation layers in a captured graph and the linears that read them.

A norm's learned scale g (and LayerNorm's shift b) can move into every linear that
reads the norm's output, W x (g * n) + c = (W diag g) n + (W b + c), when nothing else
reads it: that leaves the norm weightless, which residual rotations need (a rotation
commutes with RMS normalisation, not with an elementwise scale). Found two ways:

- an op with the scale as an argument: aten.layer_norm / aten.rms_norm (nn.LayerNorm,
  nn.RMSNorm);
- a module whose forward multiplies by its own weight last (transformers' LlamaRMSNorm
  and its copies in Qwen2, Mistral ...): the `mul` of a get_attr of that module.

Readers are found by following the norm's output through ops that only reshape, slice
or cast it; any other consumer (a residual add in a post-norm model, say) makes the
norm unfoldable, and `fold norms` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from surgeon.capture import module_path
from surgeon.rewrite import LINEAR

aten = torch.ops.aten
_NORM_OPS = {aten.layer_norm.default: (2, 3), aten.rms_norm.default: (2, None)}
# ops after which the values are the norm's output, rearranged
_TRANSPARENT = {aten.slice.Tensor, aten.view.default, aten.reshape.default,
                aten._unsafe_view.default, aten.to.dtype, aten._to_copy.default,
                aten.clone.default, aten.contiguous.default, aten.alias.default,
                aten.expand.default}
_IGNORED = {aten._assert_tensor_metadata.default}


@dataclass
class NormSite:
    path: str  # module path, without the capture prefix
    node: fx.Node  # the op that applies the scale (mul, layer_norm or rms_norm)
    weight: str  # get_attr target of the scale
    bias: str | None  # get_attr target of LayerNorm's shift
    readers: list[fx.Node] = field(default_factory=list)  # linear nodes reading the output
    other: list[fx.Node] = field(default_factory=list)  # consumers that are not linears


def _attr(node: object) -> str | None:
    return node.target if isinstance(node, fx.Node) and node.op == "get_attr" else None


def _scale_of(node: fx.Node, prefix: str) -> tuple[str, str | None] | None:
    """(weight, bias) get_attr targets if `node` applies a norm's learned scale."""
    if node.op != "call_function":
        return None
    if node.target in _NORM_OPS:
        w_at, b_at = _NORM_OPS[node.target]
        weight = _attr(node.args[w_at]) if len(node.args) > w_at else None
        bias = _attr(node.args[b_at]) if b_at is not None and len(node.args) > b_at else None
        return (weight, bias) if weight else None
    if node.target != aten.mul.Tensor:
        return None
    stack = node.meta.get("nn_module_stack") or {}
    owner, kind = list(stack.values())[-1] if stack else ("", "")
    if "norm" not in str(kind).lower():
        return None
    for arg in node.args:
        target = _attr(arg)
        if target and target.rpartition(".")[0] == owner:
            return target, None
    return None


def _consumers(node: fx.Node) -> tuple[list[fx.Node], list[fx.Node]]:
    """(linears reading `node` as their input, other consumers), through transparent ops."""
    readers: list[fx.Node] = []
    other: list[fx.Node] = []
    todo = [(node, user) for user in node.users]
    while todo:
        value, user = todo.pop()
        if user.op == "call_function" and user.target in _IGNORED:
            continue
        if user.op == "call_function" and user.target in _TRANSPARENT \
                and user.args[0] is value:
            todo.extend((user, u) for u in user.users)
        elif user.op == "call_function" and user.target == LINEAR and user.args[0] is value:
            if user not in readers:
                readers.append(user)
        else:
            other.append(user)
    return readers, other


def find_norms(gm: fx.GraphModule, prefix: str) -> list[NormSite]:
    sites = []
    for node in gm.graph.nodes:
        found = _scale_of(node, prefix)
        if found is None:
            continue
        path = module_path(node, prefix) or found[0].rpartition(".")[0]
        readers, other = _consumers(node)
        sites.append(NormSite(path, node, found[0], found[1], readers, other))
    return sites
