"""kernels triton: replace the graph patterns surgeon's kernels fuse by one op each,

    sparsify(x) -> linear(., W, b)        =>  surgeon::sparse_linear(x, W^T, t, s, b)
    linear(x, A) -> linear(., B, b)       =>  surgeon::lowrank_linear(x, A, B^T, b)
      (a factorized pair, as `factorize` or R-Sparse left it)

with the weights the kernels read row by row stored transposed (input-major W^T, rank-
major B^T). The ops run their Triton kernels on a GPU for a few tokens and their torch
references elsewhere (prefill, CPU, export, ONNX), so the rewrite is exact; it is
checked on a calibration batch. The online Hadamard (`rotate inputs`) is one op already.

Kernels from TEAL ("Training-Free Activation Sparsity in Large Language Models", Liu et
al., arXiv:2408.14690) and for SVD-LLM's factors (Wang et al., arXiv:2403.07378).
"""

from __future__ import annotations

import torch
from torch import fx

from surgeon.ir import Kernels
from surgeon.kernels.lowrank_linear import OP as LOWRANK
from surgeon.kernels.sparse_linear import OP as SPARSE_LINEAR
from surgeon.kernels.sparsify import OP as SPARSIFY
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import FACTOR_META, LINEAR, finish, outputs_kept, set_param


def _transposed(gm: fx.GraphModule, at: fx.Node, weight: fx.Node) -> fx.Node:
    """A get_attr (before `at`) of a parameter holding `weight`'s transpose, contiguous,
    beside it as `<name>_t` (made once, shared by every node reading the weight)."""
    target = weight.target + "_t"
    if target not in dict(gm.named_parameters()):
        w = gm.get_parameter(weight.target)
        set_param(gm, target, w.detach().T.contiguous())
        gm.get_parameter(target).requires_grad_(w.requires_grad)
    with gm.graph.inserting_before(at):
        return gm.graph.get_attr(target)


def _replace(gm: fx.GraphModule, node: fx.Node, op, args: tuple) -> None:
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(op, args)
    new.meta.update({k: v for k, v in node.meta.items() if k in ("nn_module_stack", "val")})
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _path(node: fx.Node, prefix: str) -> str:
    return node.args[1].target.removeprefix(prefix).removesuffix(".weight")


def fuse_sparse_linears(gm: fx.GraphModule, prefix: str) -> list[str]:
    """Every linear reading a sparsify mask directly: one sparse_linear each."""
    done = []
    for mask in [n for n in gm.graph.nodes if n.target == SPARSIFY]:
        x, threshold, *scale = mask.args
        for user in [u for u in mask.users if u.target == LINEAR and u.args[0] is mask
                     and u.args[1].op == "get_attr"]:
            w_t = _transposed(gm, user, user.args[1])
            bias = user.args[2] if len(user.args) > 2 else None
            done.append(_path(user, prefix))
            _replace(gm, user, SPARSE_LINEAR,
                     (x, w_t, threshold, scale[0] if scale else None, bias))
    return done


def fuse_lowrank_pairs(gm: fx.GraphModule, prefix: str) -> list[str]:
    """Every factorized pair (a bias-free first linear read only by its second)."""
    done = []
    for first in [n for n in gm.graph.nodes if n.target == LINEAR
                  and n.meta.get(FACTOR_META, {}).get("role") == "in"]:
        second = next(iter(first.users)) if len(first.users) == 1 else None
        if (second is None or second.target != LINEAR or second.args[0] is not first
                or second.meta.get(FACTOR_META, {}).get("role") != "out"
                or (len(first.args) > 2 and first.args[2] is not None)):
            continue
        b_t = _transposed(gm, second, second.args[1])
        bias = second.args[2] if len(second.args) > 2 else None
        done.append(_path(second, prefix))
        _replace(gm, second, LOWRANK, (first.args[0], first.args[1], b_t, bias))
    return done


@register_pass(Kernels)
class KernelsPass(Pass):
    name = "kernels"
    preserves_architecture = False  # surgeon's ops in the graph
    invalidates_statistics = False  # the same function, op for op

    def run(self, ctx: PassContext, step: Kernels) -> PassResult:
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        batch = ctx.captured.data.calibration[0].inputs
        with torch.no_grad():
            before = gm(*batch)
        sparse = fuse_sparse_linears(gm, prefix)
        lowrank = fuse_lowrank_pairs(gm, prefix)
        finish(gm)
        outputs_kept(gm, batch, before, "kernels")
        plans = [LayerPlan(path=p, method=kind, params_before=0, params_after=0,
                           flops_before=0, flops_after=0, note=f"surgeon::{kind}")
                 for kind, paths in (("sparse_linear", sparse), ("lowrank_linear", lowrank))
                 for p in paths]
        return PassResult(modified=bool(plans), layers=plans)
