"""factorize: replace a dense linear W (out x in) by two thinner ones.

W is approximated at rank k as second @ first (k x in, then out x k), so the
layer runs as two linears holding k*(in+out) weights instead of in*out. The
method decides what "approximated" means (surgeon/lowrank.py):

- svd:     truncated SVD, best in Frobenius norm (Eckart-Young, 1936);
- asvd:    columns scaled by mean |x|^alpha first (ASVD, Yuan et al., 2023,
           arXiv:2312.05821);
- svd_llm: whitened by the Cholesky factor of the input Gram, so the dropped
           sigma^2 are exactly the layer's output error on calibration data
           (SVD-LLM, Wang et al., 2024, arXiv:2403.07378);
- fwsvd:   rows weighted by Fisher importance (FWSVD, Hsu et al., 2022,
           arXiv:2207.00112).
The catalogue (surgeon/methods/factorize.py) lists them with what they need.

Ranks come from `rank N`, `params P%` (of each layer), `energy E` (of the
method's spectrum), or `budget P%`: one parameter budget over all matched
layers, allocated greedily by truncation loss per parameter (SVD-LLM v2).
A layer where the rank saves no parameters stays dense, with a warning.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import torch
from pydantic import BaseModel

from surgeon import targets
from surgeon.adapters import has_adapter
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.ir import Budget, Energy, Factorize, ParamsFraction, Rank
from surgeon.lowrank import Decomposition, allocate, decompose, output_rel_error
from surgeon.methods.factorize import METHODS
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
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


def role(site: LinearSite) -> str:
    """A layer's role: its path with layer indices generalised (encoder.layer.*.output.dense)
    and its shape, so numbered siblings of different shapes (nn.Sequential) stay apart."""
    path = re.sub(r"(?<=\.)\d+(?=\.|$)", "*", site.path)
    return f"{path} ({site.out_features}x{site.in_features})"


def _budget_ranks(step: Factorize, sites: list[LinearSite], decs: list[Decomposition]) -> list[int]:
    """Ranks under `budget P%`: each role (q, k, v, FFN in, ...) keeps P% of its dense weights,
    redistributed across depth by truncation loss per parameter (SVD-LLM v2's heterogeneity).

    Losses are compared only within a role: across roles the absolute whitened losses
    differ in scale by orders of magnitude and a single pool starves whole roles
    (on MiniLM at 60% it fell below uniform ranks; docs/benchmarks.md has the figures).
    """
    assert isinstance(step.rank, Budget)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sites):
        groups.setdefault(role(s), []).append(i)
    ranks = [0] * len(sites)
    for name, idx in groups.items():
        members = [sites[i] for i in idx]
        budget = math.floor(step.rank.percent / 100 * sum(s.out_features * s.in_features
                                                          for s in members))
        costs = [s.out_features + s.in_features for s in members]
        if sum(costs) > budget:
            raise UserError(f"budget {step.rank.percent:g}% of {name} ({budget:,} weights) is "
                            f"below rank 1 for each of its layers ({sum(costs):,} weights)")
        caps = [breakeven_rank(s.out_features, s.in_features) for s in members]
        for i, k in zip(idx, allocate(costs, [decs[i].s.pow(2) for i in idx], caps, budget),
                        strict=True):
            ranks[i] = k
    return ranks


class FactorizeDetail(BaseModel):
    """Per layer: the kept rank (None: kept dense), the method's predicted loss (dropped
    share of its sigma^2), the output error on held-out inputs, the Gram jitter."""

    kind: Literal["factorize"] = "factorize"
    rank: int | None
    predicted_loss: float | None = None
    heldout_rel_error: float | None = None  # ||(W - W')X^T|| / ||W X^T||, held-out X
    jitter: float | None = None


def _layer_plan(site: LinearSite, k: int, method: str, dec: Decomposition) -> LayerPlan:
    out_f, in_f = site.out_features, site.in_features
    bias = out_f if site.bias else 0
    dense = out_f * in_f
    limit = breakeven_rank(out_f, in_f)
    keep_dense = k > limit
    after = dense if keep_dense else lowrank_params(out_f, in_f, k)
    notes = [f"rank {k} saves nothing (break-even rank {limit}); layer kept dense"] \
        if keep_dense else []
    if dec.jitter:
        notes.append(f"Gram not positive definite: added {dec.jitter:g} x mean diagonal")
    note = "; ".join(notes) or None
    detail = FactorizeDetail(rank=None if keep_dense else k,
                             predicted_loss=None if keep_dense else dec.dropped_energy(k),
                             jitter=dec.jitter or None)
    return LayerPlan(path=site.path, shape=(out_f, in_f), method=method,
                     params_before=dense + bias, params_after=after + bias,
                     flops_before=2 * dense, flops_after=2 * after, note=note, detail=detail)


def _decompose(step: Factorize, weight: torch.Tensor, path: str, stats) -> Decomposition:
    try:
        return decompose(step.method, weight, stats, step.alpha)
    except ValueError as e:  # degenerate calibration data, not a bug
        raise UserError(f"factorize {path} (method {step.method}): {e}",
                        "calibrate on more (or more varied) samples, or use method svd") from None


@register_pass(Factorize)
class FactorizePass(Pass):
    name = "factorize"
    preserves_architecture = False

    def requires(self, ctx: PassContext, step: Factorize) -> None:
        """Statistics per matched layer: the method's, plus held-out inputs for the report."""
        for path in targets.resolve(step.target, ctx.captured.linear_sites()):
            ctx.stats.request(path, *METHODS[step.method].needs, "heldout_gram")

    def _decide(self, ctx: PassContext, step: Factorize):
        gm, all_sites = ctx.captured.gm, ctx.captured.linear_sites()
        sites = [all_sites[p] for p in targets.resolve(step.target, all_sites)]
        adapted = [s.path for s in sites if has_adapter(gm, s.weight)]
        if adapted:
            raise UserError(f"factorize {adapted[0]}: the layer has an adapter",
                            "fold adapters before factorizing their layers")
        stats = ctx.stats.layers if ctx.stats else {}
        needs = METHODS[step.method].needs
        if needs and not all(s.path in stats and all(n in stats[s.path] for n in needs)
                             for s in sites):
            raise ValueError(f"method {step.method} needs calibration statistics {needs}")
        decs = [_decompose(step, gm.get_parameter(s.weight), s.path, stats.get(s.path))
                for s in sites]
        if isinstance(step.rank, Budget):
            ranks = _budget_ranks(step, sites, decs)
        else:
            ranks = [choose_rank(step.rank, s.out_features, s.in_features, d.s)
                     for s, d in zip(sites, decs, strict=True)]
        decided = []
        for site, k, dec in zip(sites, ranks, decs, strict=True):
            plan, factors = _layer_plan(site, k, step.method, dec), None
            if plan.detail.rank is not None:
                w = gm.get_parameter(site.weight).detach()
                factors = dec.factors(plan.detail.rank, w.dtype)
                held = stats.get(site.path)
                if held is not None and "heldout_gram" in held:
                    err = output_rel_error(w, factors[1] @ factors[0], held["heldout_gram"])
                    plan.detail.heldout_rel_error = err
            decided.append((plan, site, factors))
        return decided

    def run(self, ctx: PassContext, step: Factorize) -> PassResult:
        gm = ctx.captured.gm
        done, modified = [], False
        for plan, site, factors in self._decide(ctx, step):
            if plan.note:
                ctx.warnings.append(f"factorize {plan.path}: {plan.note}")
            if factors is not None:
                first, second = factors
                owner = site.weight.removesuffix(".weight")
                set_param(gm, f"{owner}.factor_in", first)
                set_param(gm, f"{owner}.factor_out", second)
                for node in site.nodes:
                    split_linear(gm, node, f"{owner}.factor_in", f"{owner}.factor_out",
                                 plan.detail.rank)
                modified = True
            done.append(plan)
        finish(gm)
        return PassResult(modified=modified, layers=done)
