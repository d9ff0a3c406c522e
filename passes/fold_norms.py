"""fold norms: move each normalisation layer's learned scale g (and LayerNorm's shift b)
into the linears that read its output, W' = W diag(g), c' = c + W b, and set the norm's
own weights to the identity (g = 1, b = 0), so the module structure survives (`save hf`
still holds it). Exact up to float rounding; computed in float64, stored in the
weights' dtype.

Why: an orthogonal rotation Q of the residual stream commutes with RMS normalisation
(||x Q|| = ||x||) but not with an elementwise scale, so QuaRot ("QuaRot: Outlier-Free 4-Bit
Inference in Rotated LLMs", Ashkboos et al., arXiv:2404.00456) and SliceGPT ("SliceGPT:
Compress Large Language Models by Deleting Rows and Columns", Ashkboos et al.,
arXiv:2401.15024) fold the scales into the next linears first. A reader whose weight is
shared with another use (tied input/output embeddings) gets its own copy first, or the
fold would also scale the embedding.

A norm whose output also feeds anything but linears (in a post-norm model such as BERT
the norm's output is the residual stream itself) cannot be folded; it is left as it is
with a warning, and a model with no foldable norm is an error.
"""

from __future__ import annotations

import torch
from torch import fx

from surgeon.diagnostics import UserError
from surgeon.ir import FoldNorms
from surgeon.norms import NormSite, find_norms
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, set_param


def _plan(site: NormSite, gm: fx.GraphModule, prefix: str) -> LayerPlan:
    g = gm.get_parameter(site.weight)
    n = g.numel() * (2 if site.bias else 1)
    return LayerPlan(path=site.path, shape=tuple(g.shape), method="fold_norms",
                     params_before=n, params_after=n, flops_before=0, flops_after=0,
                     note=f"into {len(site.readers)} linear(s): " + ", ".join(
                         r.args[1].target.removeprefix(prefix).removesuffix(".weight")
                         for r in site.readers))


def own_weight(gm: fx.GraphModule, reader: fx.Node) -> str:
    """The reader's weight target, copied to a name of its own if anything else reads it."""
    w = reader.args[1]
    if all(u is reader for u in w.users) and \
            sum(n.op == "get_attr" and n.target == w.target for n in gm.graph.nodes) == 1:
        return w.target
    name = f"{w.target}_untied"
    set_param(gm, name, gm.get_parameter(w.target).detach().clone())
    with gm.graph.inserting_before(reader):
        own = gm.graph.get_attr(name)
    own.meta.update(w.meta)
    reader.replace_input_with(w, own)
    return name


def fold(gm: fx.GraphModule, site: NormSite) -> list[str]:
    """Fold one norm; returns the weights it had to untie (copies made for a reader)."""
    g = gm.get_parameter(site.weight).detach().double()
    b = gm.get_parameter(site.bias).detach().double() if site.bias else None
    untied: list[str] = []
    for reader in site.readers:
        shared = reader.args[1].target
        target = own_weight(gm, reader)
        if target != shared:
            untied.append(target)
        w = gm.get_parameter(target)
        set_param(gm, target, (w.detach().double() * g).to(w.dtype))
        if b is None:
            continue
        shift = w.detach().double() @ b
        if len(reader.args) > 2 and reader.args[2] is not None:
            c = gm.get_parameter(reader.args[2].target)
            set_param(gm, reader.args[2].target, (c.detach().double() + shift).to(c.dtype))
        else:
            name = target.removesuffix("_untied").removesuffix(".weight") + ".bias"
            set_param(gm, name, shift.to(w.dtype))
            with gm.graph.inserting_before(reader):
                bias = gm.graph.get_attr(name)
            reader.args = (*reader.args[:2], bias)
    ones = gm.get_parameter(site.weight)
    set_param(gm, site.weight, torch.ones_like(ones.detach()))
    if site.bias:
        set_param(gm, site.bias, torch.zeros_like(gm.get_parameter(site.bias).detach()))
    return untied


def _is_identity(gm: fx.GraphModule, site: NormSite) -> bool:
    ones = bool((gm.get_parameter(site.weight) == 1).all())
    return ones and (site.bias is None or not gm.get_parameter(site.bias).any())


@register_pass(FoldNorms)
class FoldNormsPass(Pass):
    name = "fold_norms"
    # exact, but the readers' inputs lose the norm's scale: statistics taken before it
    # describe other inputs (PCA of the stream, Grams for SVD-LLM) and must be retaken
    invalidates_statistics = True

    def run(self, ctx: PassContext, step: FoldNorms) -> PassResult:
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        sites = find_norms(gm, prefix)
        foldable = [s for s in sites if s.readers and not s.other]
        if not foldable:
            # name a norm whose output goes on into a residual add, if there is one
            blocked = sorted((s for s in sites if s.other), key=lambda s: not any(
                o.target == torch.ops.aten.add.Tensor for o in s.other))
            why = (f"{blocked[0].path}'s output also feeds {blocked[0].other[0].name} (a "
                   "post-norm model, where the norm's output is the residual stream itself)"
                   if blocked else "the model has no normalisation layer whose output "
                   "only linears read")
            raise UserError(f"fold norms: no norm can be folded: {why}")
        for s in sites:
            if s not in foldable:
                ctx.warnings.append(f"fold norms: {s.path} left as it is (its output feeds "
                                    f"{', '.join(o.name for o in s.other[:3]) or 'no linear'})")
        todo = [s for s in foldable if not _is_identity(gm, s)]
        plans = [_plan(s, gm, prefix) for s in todo]
        for s in todo:
            for name in fold(gm, s):  # a new weight: counted as such
                n = gm.get_parameter(name).numel()
                plans.append(LayerPlan(
                    path=name.removeprefix(prefix), shape=tuple(gm.get_parameter(name).shape),
                    method="fold_norms", params_before=0, params_after=n, flops_before=0,
                    flops_after=0, note="untied from the weight it shared"))
        finish(gm)
        return PassResult(modified=bool(todo), layers=plans)
