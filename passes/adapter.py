"""adapter: insert a trainable low-rank adapter beside each matched linear.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685): y = W x + b + (alpha/r) B A x with B = 0 at insertion, so
the compiled model computes exactly what the original did. PiSSA (Meng et al.,
2024, arXiv:2404.02948) initialises A and B from the principal r singular
triplets of W and freezes the residual W - (alpha/r) B A, so outputs are
unchanged up to rounding while training starts on the principal subspace. EVA
(Paischer et al., 2024, arXiv:2410.07170) takes A from the principal
components of the layer's calibration inputs and, with rho > 1, moves rank
between layers by explained variance (surgeon/eva.py); alpha moves with the
rank so alpha/r stays fixed, as PEFT's adjust_scaling_factors does. DoRA (Liu
et al., 2024, arXiv:2402.09353) adds a magnitude vector m = ||W + s B A||_row,
again function-preserving at insertion. Base weights are frozen; only adapter
parameters train. Kinds and inits are catalogue entries
(surgeon/methods/adapter.py).
"""

from __future__ import annotations

import torch

from surgeon import targets
from surgeon.adapters import (
    DoraAdapter,
    check_free,
    freeze_base,
    init_lora,
    install,
    layer_plan,
)
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.eva import explained_variance_ratio, redistribute
from surgeon.ir import Adapter
from surgeon.methods.adapter import INITS, KINDS
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, set_param


@register_pass(Adapter)
class AdapterPass(Pass):
    name = "adapter"
    preserves_architecture = False
    invalidates_statistics = False  # function-preserving at insertion: layers see the same x
    adapters = "add"

    def requires(self, ctx: PassContext, step: Adapter) -> None:
        needs = INITS[step.init].needs
        if needs:
            for path in targets.resolve(step.target, ctx.captured.linear_sites()):
                ctx.stats.request(path, *needs)

    def _plan(self, ctx: PassContext, step: Adapter) -> list[LayerPlan]:
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
        plans = self._plan(ctx, step)
        generator = torch.Generator().manual_seed(ctx.captured.data.seed)
        freeze_base(gm)  # base frozen; adapters (these and earlier ones) train
        kind = KINDS[step.method].function
        for plan in plans:
            site, rank = sites[plan.path], plan.detail.rank
            if not rank:
                continue  # EVA's redistribution left this layer nothing
            alpha = step.alpha * rank / step.rank  # keeps alpha/r when EVA moves rank
            adapter = kind(site.in_features, site.out_features, rank, alpha, step.dropout)
            weight = gm.get_parameter(site.weight).detach()
            stats = ctx.stats.layers.get(site.path) if ctx.stats else None
            residual = init_lora(adapter, step.init, weight, generator, stats)
            adapter.to(device=weight.device, dtype=weight.dtype)  # a bf16 base: bf16 adapters
            if isinstance(adapter, DoraAdapter):
                adapter.init_magnitude(weight if residual is None else residual)
            if residual is not None:
                set_param(gm, site.weight, residual)
                gm.get_parameter(site.weight).requires_grad_(False)
            install(gm, site, adapter, step.init)
        finish(gm)
        return PassResult(modified=any(p.detail.rank for p in plans), layers=plans)


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
