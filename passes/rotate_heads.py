"""rotate heads: a Hadamard rotation of every attention head's values, offline and exact.

Attention mixes positions, never features, so if each value head v_h is replaced by
v_h H (H the orthonormal Hadamard matrix of the head size), each head's output becomes
o_h H, and o_proj undoes it on its input: W_v,h <- H^T W_v,h (and b_v,h <- H^T b_v,h) for
every key-value head, W_o <- W_o diag(H, ..., H) over every attention head (grouped-query
attention included: a query head sees its group's rotated values). It spreads outliers of
the values and of o_proj's input, which QuaRot ("QuaRot: Outlier-Free 4-Bit Inference in
Rotated LLMs", Ashkboos et al., arXiv:2404.00456) rotates this way before quantising the
KV cache. Unlike the residual rotation it does not depend on where the norms sit.

Found in the graph from each scaled_dot_product_attention: its value argument traced
back through ops that only move whole head vectors (view, transpose, expand ...) to a
linear (v_proj), its output forward the same way to a linear (o_proj).
"""

from __future__ import annotations

import torch
from torch import fx

from surgeon import hadamard, outliers
from surgeon.diagnostics import UserError
from surgeon.ir import RotateHeads
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import LINEAR, finish, outputs_kept, set_param

aten = torch.ops.aten
SDPA = aten.scaled_dot_product_attention.default
# ops that move whole vectors of the last axis around (never mix its entries)
_LAYOUT = {aten.view.default, aten.reshape.default, aten._unsafe_view.default,
           aten.transpose.int, aten.slice.Tensor, aten.unsqueeze.default, aten.expand.default,
           aten.clone.default, aten.contiguous.default, aten.to.dtype, aten.permute.default}


def _back_to_linear(node: fx.Node) -> fx.Node | None:
    while node.op == "call_function" and node.target in _LAYOUT:
        node = node.args[0]
    return node if node.op == "call_function" and node.target == LINEAR else None


def _forward_to_linear(node: fx.Node) -> fx.Node | None:
    while True:
        users = [u for u in node.users if u.target != aten._assert_tensor_metadata.default]
        if len(users) != 1:
            return None
        (node,) = users
        if node.op == "call_function" and node.target == LINEAR:
            return node
        if node.op != "call_function" or node.target not in _LAYOUT:
            return None


def head_pairs(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node, int]]:
    """(v_proj, o_proj, head size) per attention; an error if an attention has no such pair."""
    pairs = []
    for node in gm.graph.nodes:
        if node.target != SDPA:
            continue
        v, o = _back_to_linear(node.args[2]), _forward_to_linear(node)
        head = int(node.meta["val"].shape[-1])
        if v is None or o is None:
            raise UserError(f"rotate heads: attention {node.name} does not read a linear's "
                            "values or feed a linear directly")
        pairs.append((v, o, head))
    if not pairs:
        raise UserError("rotate heads: the graph has no scaled_dot_product_attention",
                        "rotate heads applies to transformers' attention layers")
    return pairs


def _set(gm: fx.GraphModule, target: str, value: torch.Tensor) -> None:
    set_param(gm, target, value.to(gm.get_parameter(target).dtype))


def rotate_pair(gm: fx.GraphModule, v: fx.Node, o: fx.Node, head: int) -> None:
    h = hadamard.hadamard_matrix(head)
    wv = gm.get_parameter(v.args[1].target).detach().double()
    _set(gm, v.args[1].target,
         torch.einsum("ji,gjd->gid", h, wv.reshape(-1, head, wv.shape[1])).reshape(wv.shape))
    if len(v.args) > 2 and v.args[2] is not None:
        bv = gm.get_parameter(v.args[2].target).detach().double()
        _set(gm, v.args[2].target, (bv.reshape(-1, head) @ h).reshape(bv.shape))
    wo = gm.get_parameter(o.args[1].target).detach().double()
    _set(gm, o.args[1].target, (wo.reshape(wo.shape[0], -1, head) @ h).reshape(wo.shape))


@register_pass(RotateHeads)
class RotateHeadsPass(Pass):
    name = "rotate_heads"
    invalidates_statistics = True  # o_proj's inputs are rotated

    def requires(self, ctx: PassContext, step: RotateHeads) -> None:
        outliers.request(ctx.stats, ctx.captured)

    def run(self, ctx: PassContext, step: RotateHeads) -> PassResult:
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        pairs = head_pairs(gm)
        for v, o, head in pairs:
            try:
                hadamard.check_size(head)
            except ValueError as e:
                raise UserError(f"rotate heads: {e}") from None
            for node in (v, o):
                if gm.get_parameter(node.args[1].target).shape[0 if node is v else 1] % head:
                    raise UserError(f"rotate heads: {node.args[1].target} is not a whole "
                                    f"number of heads of size {head}")
        batch = ctx.captured.data.calibration[0].inputs
        with torch.no_grad():
            before = gm(*batch)
        for v, o, head in pairs:
            rotate_pair(gm, v, o, head)
        finish(gm)
        outputs_kept(gm, batch, before, "rotate heads")
        measured = outliers.details(ctx.stats, ctx.captured)
        plans = []
        for v, o, head in pairs:
            for node, note in ((v, "H^T on each head's rows"), (o, "H on each head's columns")):
                w = gm.get_parameter(node.args[1].target)
                path = node.args[1].target.removeprefix(prefix).removesuffix(".weight")
                plans.append(LayerPlan(
                    path=path, shape=tuple(w.shape), method="hadamard",
                    params_before=w.numel(), params_after=w.numel(), flops_before=0,
                    flops_after=0, detail=measured.get(path, outliers.OutlierDetail()),
                    note=f"{note} (head size {head})"))
        return PassResult(modified=True, layers=plans)
