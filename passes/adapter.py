"""adapter: insert a trainable low-rank adapter beside each matched linear.

LoRA (Hu et al., 2021): y = W x + b + (alpha/r) B A x with B = 0 at insertion,
so the compiled model computes exactly what the original did. PiSSA (Meng et
al., 2024) initialises A and B from the principal r singular triplets of W and
freezes the residual W - (alpha/r) B A, so outputs are unchanged up to
rounding while training starts on the principal subspace. EVA (Paischer et
al., 2024) takes A from the principal components of the layer's calibration
inputs and, with rho > 1, moves rank between layers by explained variance
(surgeon/eva.py); alpha moves with the rank so alpha/r stays fixed, as PEFT's
adjust_scaling_factors does. DoRA (Liu et al., 2024) adds a magnitude vector
m = ||W + s B A||_row, again function-preserving at insertion. Base weights
are frozen; only adapter parameters train.
"""

from __future__ import annotations

import operator

import torch

from surgeon import targets
from surgeon.adapters import (
    ADAPTER_META,
    DoraAdapter,
    LoraAdapter,
    freeze_base,
    has_adapter,
    init_lora,
)
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.eva import explained_variance_ratio, redistribute
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
        paths = targets.resolve(step.target, sites)
        for path in paths:
            s = sites[path]
            check_free(ctx.captured.gm, s)
            limit = min(s.in_features, s.out_features) if step.init == "pissa" else s.in_features
            if step.init in ("pissa", "eva") and step.rank > limit:
                raise UserError(f"adapter {path}: init {step.init} needs rank <= {limit} "
                                f"(the layer is {s.out_features}x{s.in_features}), "
                                f"got {step.rank}")
        return [_layer_plan(step, sites[p], r) for p, r in _ranks(ctx, step, paths).items()]

    def run(self, ctx: PassContext, step: Adapter) -> PassResult:
        gm = ctx.captured.gm
        sites = ctx.captured.linear_sites()
        plans = self.plan(ctx, step)
        generator = torch.Generator().manual_seed(ctx.captured.data.seed)
        freeze_base(gm)  # base frozen; adapters (these and earlier ones) train
        kind = DoraAdapter if step.method == "dora" else LoraAdapter
        for plan in plans:
            site = sites[plan.path]
            if not plan.rank:
                continue  # EVA's redistribution left this layer nothing
            alpha = step.alpha * plan.rank / step.rank  # keeps alpha/r when EVA moves rank
            adapter = kind(site.in_features, site.out_features, plan.rank, alpha, step.dropout)
            weight = gm.get_parameter(site.weight).detach()
            cov = ctx.stats.layers[site.path].covariance() if step.init == "eva" else None
            residual = init_lora(adapter, step.init, weight, generator, cov)
            adapter.to(device=weight.device, dtype=weight.dtype)  # a bf16 base: bf16 adapters
            if isinstance(adapter, DoraAdapter):
                adapter.init_magnitude(weight if residual is None else residual)
            if residual is not None:
                set_param(gm, site.weight, residual)
                gm.get_parameter(site.weight).requires_grad_(False)
            install(gm, site, adapter, step.init)
        finish(gm)
        return PassResult(modified=any(p.rank for p in plans), layers=plans)


def _ranks(ctx: PassContext, step: Adapter, paths: list[str]) -> dict[str, int]:
    if step.rho == 1:
        return dict.fromkeys(paths, step.rank)
    sites = ctx.captured.linear_sites()
    ratios = {p: explained_variance_ratio(ctx.stats.layers[p].covariance()) for p in paths}
    return redistribute(ratios, step.rank, step.rho, {p: sites[p].in_features for p in paths})


def _layer_plan(step: Adapter, site: LinearSite, rank: int) -> LayerPlan:
    extra = rank * (site.in_features + site.out_features)
    if step.method == "dora" and rank:
        extra += site.out_features  # the magnitude vector
    return layer_plan(site, rank, extra, f"{step.method}/{step.init}",
                      None if rank else "EVA gave this layer rank 0: no adapter")


def layer_plan(site: LinearSite, rank: int, extra: int, method: str,
               note: str | None = None) -> LayerPlan:
    """The plan row of an adapter that adds `extra` parameters beside a linear."""
    dense = 2 * site.out_features * site.in_features
    return LayerPlan(path=site.path, shape=(site.out_features, site.in_features), rank=rank,
                     method=method, params_before=site.params, params_after=site.params + extra,
                     flops_before=dense, flops_after=dense + 2 * extra, note=note)


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
    args = (node.args[0],)
    if isinstance(adapter, DoraAdapter):  # DoRA rescales the base output: it needs W and b
        args += (node, node.args[1], node.args[2] if len(node.args) > 2 else None)
    with g.inserting_after(node):
        delta = g.call_module(module, args)
    with g.inserting_after(delta):
        total = g.call_function(operator.add, (node, delta))
    node.replace_all_uses_with(total, delete_user_cb=lambda u: u not in (total, delta))
    for new in (delta, total):
        new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
    total.meta[ADAPTER_META] = {"module": module, "weight": weight, "init": init,
                                "alpha": adapter.alpha, "rank": adapter.rank}
