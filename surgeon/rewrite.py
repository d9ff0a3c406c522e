"""Graph edits shared by passes: adding parameters, splitting a linear node,
and dropping parameters no node reads any more (so artifacts never carry dead
weights).
"""

from __future__ import annotations

import torch
from torch import fx, nn

LINEAR = torch.ops.aten.linear.default
FACTOR_META = "surgeon_factor"  # marks linears a pass created (not dense Linear sites)

# what new nodes inherit from the node they replace: module paths keep targets resolvable
_KEPT_META = ("nn_module_stack", "stack_trace")


def set_param(gm: fx.GraphModule, qualname: str, value: torch.Tensor) -> None:
    owner_name, _, attr = qualname.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    owner.register_parameter(attr, nn.Parameter(value.contiguous()))


def split_linear(gm: fx.GraphModule, node: fx.Node, first: str, second: str, rank: int) -> None:
    """Replace y = linear(x, W, b) by y = linear(linear(x, A), B, b) with get_attr A, B."""
    g = gm.graph
    x, _w, *rest = node.args
    bias = rest[0] if rest else None
    with g.inserting_before(node):
        a, b = g.get_attr(first), g.get_attr(second)
        h = g.call_function(LINEAR, (x, a))
        y = g.call_function(LINEAR, (h, b, bias) if bias is not None else (h, b))
    for new, role in ((a, None), (b, None), (h, "in"), (y, "out")):
        new.meta.update({k: v for k, v in node.meta.items() if k in _KEPT_META})
        if role:
            new.meta[FACTOR_META] = {"role": role, "rank": rank}
    node.replace_all_uses_with(y)
    g.erase_node(node)


def drop_unused_params(gm: fx.GraphModule) -> int:
    """Remove get_attr nodes without users and parameters nothing reads; returns numel freed."""
    g = gm.graph
    for n in list(g.nodes):
        if n.op == "get_attr" and not n.users:
            g.erase_node(n)
    used = {n.target for n in g.nodes if n.op == "get_attr"}
    called = tuple(f"{n.target}." for n in g.nodes if n.op == "call_module")
    freed = 0
    for name, p in list(gm.named_parameters(remove_duplicate=False)):
        if name not in used and not name.startswith(called):
            owner_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(owner_name) if owner_name else gm
            if attr in owner._parameters:
                freed += p.numel()
                del owner._parameters[attr]
    return freed


def finish(gm: fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    drop_unused_params(gm)
    gm.graph.lint()
    gm.recompile()


# relative output drift an exact rewrite (a rotation) may cause: rounding of the rewritten
# weights (float32: ~1e-6 measured), beyond which the rewrite missed part of the graph
EXACT = {torch.float32: 1e-4, torch.float64: 1e-9, torch.bfloat16: 0.1, torch.float16: 0.05}


def outputs_kept(gm: fx.GraphModule, inputs: tuple, before: torch.Tensor, what: str) -> None:
    """Raise unless `gm` still computes `before` on `inputs` (a pass failure: the rewrite
    was meant to be exact)."""
    with torch.no_grad():
        after = gm(*inputs)
    drift = float((after - before).abs().max() / before.abs().max().clamp_min(1e-30))
    if not drift <= EXACT.get(before.dtype, 1e-4):  # also NaN
        raise RuntimeError(f"{what}: the outputs moved by {drift:.3g} of their largest value "
                           "on a calibration batch; the rewrite should have been exact")
