"""rotate inputs "<target>": an online Hadamard transform of each matched linear's input,
x -> x H^T (the surgeon::hadamard custom op, surgeon/kernels/hadamard.py), with its inverse
folded into the weight offline, W <- W H^T, so the layer computes x W^T as before while
its weight and its input are both spread by H. Exact up to float rounding (float64 for
the fold); the online op costs O(n log n) per token.

QuaRot ("QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs", Ashkboos et al.,
arXiv:2404.00456) does this for down_proj, whose input (the gated FFN activation) has the
worst outliers of a transformer and which no residual rotation reaches. The online op
and the folded weight use the same H_n (surgeon/hadamard.py), so they cannot disagree.
"""

from __future__ import annotations

import torch

from surgeon import hadamard, outliers, targets
from surgeon.diagnostics import UserError
from surgeon.ir import RotateInputs
from surgeon.kernels.hadamard import OP
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, outputs_kept, set_param


@register_pass(RotateInputs)
class RotateInputsPass(Pass):
    name = "rotate_inputs"
    preserves_architecture = False  # a new op in the graph: transformers cannot hold it

    def requires(self, ctx: PassContext, step: RotateInputs) -> None:
        outliers.request(ctx.stats, ctx.captured)

    def run(self, ctx: PassContext, step: RotateInputs) -> PassResult:
        gm = ctx.captured.gm
        sites = ctx.captured.linear_sites()
        chosen = [sites[p] for p in targets.resolve(step.target, sites)]
        for site in chosen:
            try:
                hadamard.check_size(site.in_features)
            except ValueError as e:
                raise UserError(f"rotate inputs: {site.path}: {e}") from None
        batch = ctx.captured.data.calibration[0].inputs
        with torch.no_grad():
            before = gm(*batch)
        for site in chosen:
            w = gm.get_parameter(site.weight)
            h = hadamard.hadamard_matrix(site.in_features)
            set_param(gm, site.weight, (w.detach().double() @ h.T).to(w.dtype))
            for node in site.nodes:  # every call of the layer gets the transform
                with gm.graph.inserting_before(node):
                    rotated = gm.graph.call_function(OP, (node.args[0],))
                rotated.meta.update({k: v for k, v in node.meta.items()
                                     if k in ("nn_module_stack", "val")})
                node.replace_input_with(node.args[0], rotated)
        finish(gm)
        outputs_kept(gm, batch, before, "rotate inputs")
        measured = outliers.details(ctx.stats, ctx.captured)
        plans = []
        for site in chosen:
            n = site.in_features
            k, power = hadamard.factor(n)
            # the online transform: log2(2^m) butterfly adds per element, plus K-wide products
            online = n * (power.bit_length() - 1) + 2 * n * (k if k > 1 else 0)
            plans.append(LayerPlan(
                path=site.path, shape=(site.out_features, n), method="hadamard",
                params_before=site.params, params_after=site.params,
                flops_before=2 * site.out_features * n,
                flops_after=2 * site.out_features * n + online,
                detail=measured.get(site.path, outliers.OutlierDetail()),
                note=f"online surgeon::hadamard on the input (n = {k} x {power}), W H^T"))
        return PassResult(modified=bool(chosen), layers=plans)
