"""sparsify "<target>" P% by teal|wina|cats|rsparse [allocate uniform|greedy]: training-free
activation sparsity. Each matched linear's input gets a `surgeon::sparsify` node in front
of it (surgeon/kernels/sparsify.py) that zeroes the entries scoring at or below a
threshold calibrated on the calibration tokens, so a decode kernel can skip the weight
columns they meet (memory-bound decode: up to 1 / (1 - s) faster at sparsity s).

- TEAL: score |x|; linears reading the same tensor (q/k/v, gate/up) share one mask.
- WINA: score |x_i| ||W_:,i||_2 with the reading weight's column norms, one mask each.
- CATS: score |act(gate x)|, masked inside a gated MLP before the product with up (the
  down_proj input; up's rows are skippable too), or the activation output feeding the
  linear in a plain MLP.
- R-Sparse: TEAL's mask, plus the zeroed entries through a rank-r SVD copy of W:
  y = W (x m) + U_r S_r V_r^T (x - x m).
- LaRoSA: first an exact rotation of the residual stream, segment j into the principal
  directions B_j of its normalised stream (SliceGPT's machinery with whole bases:
  passes/slice_residual.py, needs `fold norms`), then each token keeps its top-k |x|
  (`surgeon::sparsify_topk`, the same share on every token). Linears that do not read
  the stream (o_proj, down_proj) get top-k on their unrotated input.

`allocate uniform` puts every mask at the target; `allocate greedy` is TEAL's greedy
search (surgeon/sparsity.py), measured here on each group's own output error rather
than a block's (cheaper, and independent of how blocks are delimited). The target and
the achieved share are parameter-weighted over the matched linears; the achieved share
is measured on held-out tokens after the rewrite and reported per linear.

Papers: TEAL arXiv:2408.14690, WINA arXiv:2505.19427, CATS arXiv:2404.08763,
R-Sparse arXiv:2504.19449, LaRoSA arXiv:2507.01299 (surgeon/methods/sparsify.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from torch import fx

from surgeon import sparsity, targets
from surgeon.calibration import CalibrationStats
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.ir import Sparsify
from surgeon.kernels.sparsify import OP
from surgeon.kernels.sparsify_topk import OP as TOPK
from surgeon.methods.sparsify import CRITERIA
from surgeon.passes.rotate_residual import pca_rotation
from surgeon.passes.slice_residual import gram_site, slice_stream, sliceable_stream
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import FACTOR_META, LINEAR, finish, outputs_kept, set_param

WHAT = "sparsify"
ACTIVATIONS = {torch.ops.aten.silu.default, torch.ops.aten.gelu.default,
               torch.ops.aten.relu.default, torch.ops.aten.sigmoid.default,
               torch.ops.aten.tanh.default}
MUL = torch.ops.aten.mul.Tensor
DRIFT_WARNING = 0.02  # achieved vs target, parameter-weighted; the tolerance


class SparsityDetail(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: str = "sparsity"
    target: float
    achieved: float  # share of zero input entries on held-out tokens
    threshold: float | None = None  # zero where the score is at or below it
    kept: int | None = None  # top-k: entries each token keeps


@dataclass
class Group:
    """Linears whose input one mask zeroes: the tensor masked, the nodes that read it,
    where its calibration values come from."""

    source: fx.Node
    consumers: list[fx.Node] = field(default_factory=list)
    sites: list[LinearSite] = field(default_factory=list)
    rows_from: LinearSite | None = None  # whose sampled input rows are (or give) the values
    act: fx.Node | None = None  # CATS: the activation, computed from gate's rows
    gate: LinearSite | None = None
    up: LinearSite | None = None
    basis: torch.Tensor | None = None  # LaRoSA: the segment's rotation (d x d, float64)

    @property
    def params(self) -> int:
        return sum(s.out_features * s.in_features for s in self.sites)


def _site_of(node: object, by_node: dict[fx.Node, LinearSite]) -> LinearSite | None:
    return by_node.get(node) if isinstance(node, fx.Node) else None


CatsSource = tuple[fx.Node, fx.Node, LinearSite, LinearSite | None]


def _cats_source(site: LinearSite, node: fx.Node, by_node: dict) -> CatsSource:
    """(activation node, its consumer on the way to the linear, gate site, up site)."""
    x = node.args[0]
    act, consumer, other = None, node, None
    if isinstance(x, fx.Node) and x.target in ACTIVATIONS:
        act = x
    elif isinstance(x, fx.Node) and x.target == MUL:
        found = [a for a in x.args[:2] if isinstance(a, fx.Node) and a.target in ACTIVATIONS]
        if len(found) == 1:
            act, consumer = found[0], x
            other = next(a for a in x.args[:2] if a is not act)
    gate = _site_of(act.args[0], by_node) if act is not None else None
    up = _site_of(other, by_node)
    if act is None or gate is None or (other is not None and (
            up is None or up is gate or _input(by_node, up) is not _input(by_node, gate))):
        raise UserError(f"{WHAT} by cats: the input of {site.path} is not act(linear(x)) or "
                        "act(gate(x)) * up(x)", "CATS thresholds a gated MLP's activation "
                        "(down_proj's input); use teal or wina for other linears")
    return act, consumer, gate, up


def _input(by_node: dict, site: LinearSite) -> fx.Node:
    return site.nodes[0].args[0]


def groups(ctx: PassContext, step: Sparsify) -> list[Group]:
    sites = ctx.captured.linear_sites()
    chosen = [sites[p] for p in targets.resolve(step.target, sites)]
    how = CRITERIA[step.by].extra
    by_node = {n: s for s in sites.values() for n in s.nodes}
    found: dict[object, Group] = {}
    for site in chosen:
        for node in site.nodes:
            if how["at"] == "activation":
                act, consumer, gate, up = _cats_source(site, node, by_node)
                g = found.setdefault(act, Group(act, act=act, gate=gate, up=up, rows_from=gate))
            else:
                x = node.args[0]
                key = x if how["shared"] else (site.path, x)
                g = found.setdefault(key, Group(x, rows_from=site))
                consumer = node
            if consumer not in g.consumers:
                g.consumers.append(consumer)
            if site not in g.sites:
                g.sites.append(site)
    return list(found.values())


def _weight(ctx: PassContext, site: LinearSite) -> torch.Tensor:
    return ctx.captured.gm.get_parameter(site.weight).detach().float()


def _bias(ctx: PassContext, site: LinearSite) -> torch.Tensor | None:
    node = site.nodes[0]
    b = node.args[2] if len(node.args) > 2 else None
    return ctx.captured.gm.get_parameter(b.target).detach().float() if b is not None else None


def _values(ctx: PassContext, g: Group) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The masked tensor's calibration rows, and (CATS) what multiplies them."""
    rows = ctx.stats[g.rows_from.path]["input_rows"]
    if g.basis is not None:  # the stream as the rotated model sees it
        rows = (rows.double() @ g.basis).float()
    if g.act is None:
        return rows, None

    def apply(site: LinearSite) -> torch.Tensor:
        return torch.nn.functional.linear(rows, _weight(ctx, site), _bias(ctx, site))

    a = g.act.target(apply(g.gate), *g.act.args[1:], **g.act.kwargs)
    return a, apply(g.up) if g.up is not None else None


def _readers(ctx: PassContext, g: Group, rank: int | None) -> list[sparsity.Reader]:
    out = []
    for site in g.sites:
        w = _weight(ctx, site)
        lost = w
        if rank is not None:
            a, b = sparsity.low_rank(w, rank)
            lost = (w.double() - b @ a).float()
        out.append(sparsity.Reader(w, lost))
    return out


def _scale(step: Sparsify, ctx: PassContext, g: Group) -> torch.Tensor | None:
    return CRITERIA[step.by].function(_weight(ctx, g.sites[0]))


def allocate(ctx: PassContext, step: Sparsify, gs: list[Group]) -> list[float]:
    target = step.percent / 100
    if step.allocate == "uniform":
        return [target] * len(gs)
    curves = []
    for g in gs:
        rows, mult = _values(ctx, g)
        curves.append(sparsity.error_curve(rows, _readers(ctx, g, step.rank),
                                           _scale(step, ctx, g), mult,
                                           topk=CRITERIA[step.by].extra["rotate"]))
    return sparsity.greedy_allocation(curves, [g.params for g in gs], target)


def _param(gm: fx.GraphModule, owner: str, name: str, value: torch.Tensor) -> str:
    target = f"{owner}.{name}"
    set_param(gm, target, value)
    gm.get_parameter(target).requires_grad_(False)  # calibrated, not trained
    return target


def _insert(gm: fx.GraphModule, g: Group, threshold: float | None,
            scale: torch.Tensor | None, kept: int | None = None) -> fx.Node:
    """The mask node in front of the group's consumers: a threshold, or top-k per token."""
    owner = g.sites[0].weight.removesuffix(".weight")
    names = []
    if kept is None:  # float32 whatever the model's dtype: bfloat16 would move the sparsity
        names.append(_param(gm, owner, "sparsify_threshold", torch.tensor([threshold])))
    if scale is not None:
        names.append(_param(gm, owner, "sparsify_scale", scale.float()))
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    with gm.graph.inserting_before(min(g.consumers, key=order.__getitem__)):
        attrs = [gm.graph.get_attr(n) for n in names]
        masked = gm.graph.call_function(OP, (g.source, *attrs)) if kept is None else \
            gm.graph.call_function(TOPK, (g.source, kept))
    masked.meta.update({k: v for k, v in g.consumers[0].meta.items()
                        if k in ("nn_module_stack", "val")})
    masked.meta["val"] = g.source.meta.get("val")
    for c in g.consumers:
        c.replace_input_with(g.source, masked)
    return masked


def _complement(gm: fx.GraphModule, site: LinearSite, masked: fx.Node, rank: int) -> int:
    """R-Sparse: y = W (x m) + B (A (x - x m)) on every call of the site; returns the
    parameters added."""
    w = gm.get_parameter(site.weight)
    a, b = sparsity.low_rank(w, rank)
    owner = site.weight.removesuffix(".weight")
    names = [_param(gm, owner, "rsparse_a", a.to(w.dtype)),
             _param(gm, owner, "rsparse_b", b.to(w.dtype))]
    g = gm.graph
    for node in site.nodes:
        with g.inserting_before(node):
            rest = g.call_function(torch.ops.aten.sub.Tensor, (masked.args[0], masked))
            wa, wb = (g.get_attr(n) for n in names)
            h = g.call_function(LINEAR, (rest, wa))
            low = g.call_function(LINEAR, (h, wb))
        with g.inserting_after(node):
            y = g.call_function(torch.ops.aten.add.Tensor, (node, low))
        node.replace_all_uses_with(y, delete_user_cb=lambda user, y=y: user is not y)
        for new, role in ((rest, None), (h, "in"), (low, "out"), (y, None)):
            new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
            if role:
                new.meta[FACTOR_META] = {"role": role, "rank": rank}
    return a.numel() + b.numel()


def achieved(ctx: PassContext, sites: list[LinearSite]) -> dict[str, float]:
    """Share of zero input entries per linear on the held-out tokens, as the graph now runs."""
    held = CalibrationStats(ctx.captured)
    for site in sites:
        held.request(site.path, "zero_share")
    held.collect()
    return {s.path: float(held[s.path]["zero_share"]) for s in sites}


def rotate_stream(ctx: PassContext, gs: list[Group]) -> list[LayerPlan]:
    """LaRoSA's rotation: every segment of the residual stream into its principal
    directions (whole bases: exact, checked), and each group reading a segment told its
    basis. Returns the plans of the skip-connection matrices it adds."""
    gm, prefix = ctx.captured.gm, ctx.captured.prefix
    stream = sliceable_stream(ctx, f"{WHAT} by larosa")
    d = gm.get_parameter(stream.embedding.args[0].target).shape[1]
    bases = [pca_rotation(d, 0, ctx.stats[gram_site(seg, prefix)]["gram"])
             for seg in stream.segments]
    batch = ctx.captured.data.calibration[0].inputs
    with torch.no_grad():
        before = gm(*batch)
    plans = slice_stream(gm, stream, bases, prefix)
    finish(gm)
    outputs_kept(gm, batch, before, f"{WHAT} by larosa (the rotation)")
    for g in gs:
        for seg, basis in zip(stream.segments, bases, strict=True):
            if set(g.consumers) <= set(seg.norm.readers):
                g.basis = basis
    return [lp for lp in plans if lp.path.startswith("skip.")]


def _mask(ctx: PassContext, step: Sparsify, g: Group, level: float
          ) -> tuple[fx.Node, float | None, int | None]:
    """Insert the group's mask at `level`; (mask node, threshold, kept per token)."""
    if CRITERIA[step.by].extra["rotate"]:
        kept = sparsity.kept_per_token(g.sites[0].in_features, level)
        if kept == g.sites[0].in_features:  # nothing to zero: no node
            return g.source, None, kept
        return _insert(ctx.captured.gm, g, None, None, kept), None, kept
    rows, _ = _values(ctx, g)
    scale = _scale(step, ctx, g)
    t = sparsity.threshold_at(sparsity.scores(rows, scale), level)
    return _insert(ctx.captured.gm, g, t, scale), t, None


@register_pass(Sparsify)
class SparsifyPass(Pass):
    name = "sparsify"
    preserves_architecture = False  # a new op in front of the linears

    def requires(self, ctx: PassContext, step: Sparsify) -> None:
        for g in groups(ctx, step):
            ctx.stats.request(g.rows_from.path, "input_rows")
        if CRITERIA[step.by].extra["rotate"]:
            for seg in sliceable_stream(ctx, f"{WHAT} by larosa").segments:
                ctx.stats.request(gram_site(seg, ctx.captured.prefix), "gram")

    def run(self, ctx: PassContext, step: Sparsify) -> PassResult:
        gm = ctx.captured.gm
        gs = groups(ctx, step)
        added = rotate_stream(ctx, gs) if CRITERIA[step.by].extra["rotate"] else []
        levels = allocate(ctx, step, gs)
        chosen: dict[str, tuple[LinearSite, SparsityDetail, int]] = {}
        for g, level in zip(gs, levels, strict=True):
            masked, t, kept = _mask(ctx, step, g, level)
            for site in g.sites:
                extra = _complement(gm, site, masked, step.rank) if step.rank else 0
                note = SparsityDetail(target=round(level, 4), achieved=0.0,
                                      threshold=None if t is None else float(f"{t:.6g}"),
                                      kept=kept)
                chosen[site.path] = (site, note, extra)
        finish(gm)
        got = achieved(ctx, [c[0] for c in chosen.values()])
        plans = [_plan(step, site, detail.model_copy(update={"achieved": round(got[p], 4)}),
                       extra, g is not None)
                 for p, (site, detail, extra) in chosen.items()
                 for g in [next(x.basis for x in gs if site in x.sites)]]
        weight = sum(s.out_features * s.in_features for s, *_ in chosen.values())
        overall = sum(s.out_features * s.in_features * got[p]
                      for p, (s, *_) in chosen.items()) / weight
        if abs(overall - step.percent / 100) > DRIFT_WARNING:
            ctx.warnings.append(
                f"sparsify: {overall:.1%} of the inputs are zero on held-out tokens, "
                f"against a target of {step.percent:g}% (calibration and held-out "
                "activations differ, or upstream masks shifted them)")
        return PassResult(modified=True, layers=plans + added,
                          summary={"target_sparsity": step.percent / 100,
                                   "achieved_sparsity": overall})


def _plan(step: Sparsify, site: LinearSite, detail: SparsityDetail, extra: int,
          rotated: bool) -> LayerPlan:
    dense = site.out_features * site.in_features
    rank_flops = 2 * extra  # the low-rank copy runs densely
    if detail.kept is not None:
        how = f"surgeon::sparsify_topk, {detail.kept} of {site.in_features} kept per token" \
              + ("" if rotated else " (input not on the stream: unrotated)")
    else:
        how = f"surgeon::sparsify, zero where score <= {detail.threshold:.3g}"
    return LayerPlan(
        path=site.path, shape=(site.out_features, site.in_features), method=step.by,
        params_before=site.params, params_after=site.params + extra,
        flops_before=2 * dense, flops_after=round(2 * dense * (1 - detail.achieved)) + rank_flops,
        detail=detail,
        note=how + (f"; rank-{step.rank} copy of W for the zeroed entries" if extra else ""))
