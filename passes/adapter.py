"""adapter: insert a trainable low-rank adapter beside each matched linear.

LoRA (Hu et al., 2021): y = W x + b + (alpha/r) B A x with B = 0 at insertion,
so the compiled model computes exactly what the original did. PiSSA (Meng et
al., 2024) initialises A and B from the principal r singular triplets of W and
freezes the residual W - (alpha/r) B A, so outputs are unchanged up to
rounding while training starts on the principal subspace. Base weights are
frozen; only adapter parameters train.
"""

from __future__ import annotations

import operator

import torch

from surgeon import targets
from surgeon.adapters import ADAPTER_META, LoraAdapter, freeze_base, has_adapter, init_lora
from surgeon.diagnostics import UserError
from surgeon.ir import Adapter
from surgeon.registry import LayerPlan, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, set_param


@register_pass(Adapter)
class AdapterPass:
    name = "adapter"

    def requires(self, ctx: PassContext, step: Adapter) -> None:
        if step.init == "eva":  # input covariance = centred Gram
            for path in targets.resolve(step.target, ctx.captured.linear_sites()):
                ctx.stats.request(path, "gram", "mean")

    def plan(self, ctx: PassContext, step: Adapter) -> list[LayerPlan]:
        sites = ctx.captured.linear_sites()
        plans = []
        for path in targets.resolve(step.target, sites):
            s = sites[path]
            check_free(ctx.captured.gm, s)
            limit = min(s.in_features, s.out_features) if step.init == "pissa" else s.in_features
            if step.init in ("pissa", "eva") and step.rank > limit:
                raise UserError(f"adapter {path}: init {step.init} needs rank <= {limit} "
                                f"(the layer is {s.out_features}x{s.in_features}), "
                                f"got {step.rank}")
            extra = step.rank * (s.in_features + s.out_features)
            plans.append(LayerPlan(path=path, shape=(s.out_features, s.in_features),
                                   rank=step.rank, method=f"{step.method}/{step.init}",
                                   params_before=s.params, params_after=s.params + extra,
                                   flops_before=2 * s.out_features * s.in_features,
                                   flops_after=2 * (s.out_features * s.in_features + extra)))
        return plans

    def run(self, ctx: PassContext, step: Adapter) -> PassResult:
        gm = ctx.captured.gm
        sites = ctx.captured.linear_sites()
        plans = self.plan(ctx, step)
        generator = torch.Generator().manual_seed(ctx.captured.data.seed)
        freeze_base(gm)  # base frozen; adapters (these and earlier ones) train
        for plan in plans:
            site = sites[plan.path]
            adapter = LoraAdapter(site.in_features, site.out_features, step.rank, step.alpha,
                                  step.dropout)
            weight = gm.get_parameter(site.weight).detach()
            cov = ctx.stats.layers[site.path].covariance() if step.init == "eva" else None
            residual = init_lora(adapter, step.init, weight, generator, cov)
            if residual is not None:
                set_param(gm, site.weight, residual)
                gm.get_parameter(site.weight).requires_grad_(False)
            install(gm, site, adapter, step.init)
        finish(gm)
        return PassResult(modified=bool(plans), layers=plans)


def check_free(gm, site) -> None:
    if has_adapter(gm, site.weight):
        raise UserError(f"{site.path} already has an adapter", "fold it before adding another")


def install(gm, site, adapter: LoraAdapter, init: str) -> None:
    """Register the adapter under the linear's module and add its output to every use."""
    owner = site.weight.removesuffix(".weight")
    adapter.train(gm.training)  # a new module starts in train mode; follow the graph
    gm.get_submodule(owner).add_module("adapter", adapter)
    for node in site.nodes:
        _attach(gm, node, f"{owner}.adapter", site.weight, adapter, init)


def _attach(gm, node, module: str, weight: str, adapter: LoraAdapter, init: str) -> None:
    g = gm.graph
    with g.inserting_after(node):
        delta = g.call_module(module, (node.args[0],))
    with g.inserting_after(delta):
        total = g.call_function(operator.add, (node, delta))
    node.replace_all_uses_with(total, delete_user_cb=lambda u: u is not total)
    for new in (delta, total):
        new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
    total.meta[ADAPTER_META] = {"module": module, "weight": weight, "init": init,
                                "alpha": adapter.alpha, "rank": adapter.rank}
