"""factorize: replace a dense linear W (out x in) by two thinner ones.

Truncated SVD W = U S V^T kept to rank k and split symmetrically,
W' = (U_k S_k^1/2)(S_k^1/2 V_k^T), so y = W'x + b runs as two linears of
k*(in+out) weights instead of in*out. By Eckart-Young (1936) this is the best
rank-k approximation in Frobenius norm, with error sqrt(sum of dropped s^2).
Plain SVD ignores what the layer sees; SVD-LLM (Wang et al., 2024,
arXiv:2403.07378) whitens by the input Gram first (the factorization issue adds
it). A layer where rank k saves no parameters stays dense, with a warning.
"""

from __future__ import annotations

import math

import torch

from surgeon import targets
from surgeon.ir import Energy, Factorize, ParamsFraction, Rank
from surgeon.registry import LayerPlan, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, set_param, split_linear


def lowrank_params(out_f: int, in_f: int, k: int) -> int:
    return k * (out_f + in_f)


def breakeven_rank(out_f: int, in_f: int) -> int:
    """Largest k whose two factors hold fewer weights than the dense matrix."""
    return (out_f * in_f - 1) // (out_f + in_f)


def choose_rank(spec: Rank | ParamsFraction | Energy, out_f: int, in_f: int,
                singular_values: torch.Tensor | None = None) -> int:
    if isinstance(spec, Rank):
        return spec.value
    if isinstance(spec, ParamsFraction):
        return max(1, math.floor(spec.percent / 100 * out_f * in_f / (out_f + in_f)))
    if singular_values is None:
        raise ValueError("energy-based rank needs the singular values")
    energy = singular_values.double().pow(2)
    cum = torch.cumsum(energy, 0) / energy.sum()
    # smallest k with cum[k-1] >= fraction; tolerance guards fraction 1.0 against rounding
    return int(torch.searchsorted(cum, torch.tensor(spec.fraction - 1e-12, dtype=cum.dtype))) + 1


def svd_factors(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first k x in, second out x k, all singular values); second @ first = rank-k W."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:k].sqrt()
    first = (root[:, None] * vh[:k]).to(weight.dtype)
    second = (u[:, :k] * root[None, :]).to(weight.dtype)
    return first, second, s


def _plan_layer(path: str, out_f: int, in_f: int, bias: int, k: int) -> LayerPlan:
    dense = out_f * in_f
    limit = breakeven_rank(out_f, in_f)
    keep_dense = k > limit
    after = dense if keep_dense else lowrank_params(out_f, in_f, k)
    note = (f"rank {k} saves nothing (break-even rank {limit}); layer kept dense"
            if keep_dense else None)
    return LayerPlan(path=path, shape=(out_f, in_f), rank=None if keep_dense else k,
                     params_before=dense + bias, params_after=after + bias,
                     flops_before=2 * dense, flops_after=2 * after, note=note)


@register_pass(Factorize)
class FactorizePass:
    name = "factorize"

    def plan(self, ctx: PassContext, step: Factorize) -> list[LayerPlan]:
        sites = ctx.captured.linear_sites()
        plans = []
        for path in targets.resolve(step.target, sites):
            site = sites[path]
            sv = None
            if isinstance(step.rank, Energy):
                w = ctx.captured.gm.get_parameter(site.weight)
                sv = torch.linalg.svdvals(w.detach().double())
            k = choose_rank(step.rank, site.out_features, site.in_features, sv)
            plans.append(_plan_layer(path, site.out_features, site.in_features,
                                     site.out_features if site.bias else 0, k))
        return plans

    def run(self, ctx: PassContext, step: Factorize) -> PassResult:
        gm = ctx.captured.gm
        sites = ctx.captured.linear_sites()
        plans = self.plan(ctx, step)
        modified = False
        for plan in plans:
            if plan.rank is None:
                ctx.warnings.append(f"factorize {plan.path}: {plan.note}")
            else:
                site = sites[plan.path]
                w = gm.get_parameter(site.weight).detach()
                first, second, _ = svd_factors(w, plan.rank)
                owner = site.weight.removesuffix(".weight")
                set_param(gm, f"{owner}.factor_in", first)
                set_param(gm, f"{owner}.factor_out", second)
                for node in site.nodes:
                    split_linear(gm, node, f"{owner}.factor_in", f"{owner}.factor_out", plan.rank)
                modified = True
            if ctx.progress:
                ctx.progress(1)
        finish(gm)
        return PassResult(modified=modified, layers=plans)
