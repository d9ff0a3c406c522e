"""slice residual P%: SliceGPT on a pre-norm residual stream.

Each segment j of the stream (from one residual add to the next; the first starts at
the embedding) gets its own orthogonal basis Q_j, the principal directions of the
normalised stream there (the eigenvectors of the input Gram of the norm's first reader,
largest first), and only its leading k = d - round(d P / 100) columns B_j are kept:

    E <- E B_0                      the embedding, (vocab, k)
    W <- W B_j                      the readers of segment j (through its norm)
    W <- B_j^T W,  b <- B_j^T b     the writer whose add starts segment j
    x <- x (B_{j-1}^T B_j)          a new k x k linear on the skip path into segment j
    g <- sqrt(d / k) 1_k            the norm's weight: RMS over k dims, not d, would
                                    otherwise scale every norm output by sqrt(k / d)

With k = d this is an exact rotation (SliceGPT's computational invariance); deleting
directions is the compression, judged by perplexity. `fold norms` must come first (the
bases are taken on the normalised stream, and a scale would not commute with them).

"SliceGPT: Compress Large Language Models by Deleting Rows and Columns", Ashkboos et al.,
arXiv:2401.15024.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from surgeon.diagnostics import UserError
from surgeon.ir import SliceResidual
from surgeon.passes.fold_norms import own_weight
from surgeon.passes.rotate_residual import pca_rotation
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.residual import ResidualStream, Segment, check_rotatable, find_stream
from surgeon.rewrite import LINEAR, finish, set_param

WHAT = "slice residual"


def gram_site(segment: Segment, prefix: str) -> str:
    """The linear whose input Gram is the segment's normalised stream's."""
    reader = segment.norm.readers[0]
    return reader.args[1].target.removeprefix(prefix).removesuffix(".weight")


def sliceable_stream(ctx: PassContext, what: str = WHAT) -> ResidualStream:
    """The residual stream, refused (naming `what`) unless every segment can be rotated."""
    stream = find_stream(ctx.captured.gm, ctx.captured.prefix, what)
    check_rotatable(stream, ctx.captured.gm, what)
    for seg in stream.segments:
        if seg.norm is None or not seg.norm.readers:
            raise UserError(f"{what}: the stream after {seg.start.name} is read by no norm")
    return stream


def _set(gm: fx.GraphModule, target: str, value: torch.Tensor) -> tuple[int, int]:
    before = gm.get_parameter(target)
    set_param(gm, target, value.to(before.dtype))
    return before.numel(), value.numel()


def slice_stream(gm: fx.GraphModule, stream: ResidualStream, bases: list[torch.Tensor],
                 prefix: str) -> list[LayerPlan]:
    """Rewrite the graph for the kept bases (d x k each, float64, one per segment)."""
    d, k = bases[0].shape
    plans = []

    def plan(target: str, sizes: tuple[int, int], note: str) -> None:
        w = gm.get_parameter(target)
        plans.append(LayerPlan(path=target.removeprefix(prefix).removesuffix(".weight"),
                               shape=tuple(w.shape), method="slicegpt",
                               params_before=sizes[0], params_after=sizes[1],
                               flops_before=2 * sizes[0], flops_after=2 * sizes[1], note=note))

    created = set()  # readers' weights untied from the embedding here (a tied lm_head)
    for seg in stream.segments:  # before the embedding changes
        for reader in seg.norm.readers:
            shared = reader.args[1].target
            if own_weight(gm, reader) != shared:
                created.add(reader.args[1].target)
    embed = stream.embedding.args[0].target
    plan(embed, _set(gm, embed, gm.get_parameter(embed).detach().double() @ bases[0]),
         "embedding: E B_0")
    previous = None
    for j, (seg, basis) in enumerate(zip(stream.segments, bases, strict=True)):
        for reader in seg.norm.readers:
            target = reader.args[1].target
            w = gm.get_parameter(target).detach().double()
            sizes = _set(gm, target, w @ basis)
            plan(target, (0, sizes[1]) if target in created else sizes,
                 f"reads segment {j}: W B_{j}" + (" (untied)" if target in created else ""))
        weight = seg.norm.weight
        plan(weight, _set(gm, weight, torch.full((k,), math.sqrt(d / k), dtype=torch.float64)),
             f"norm of segment {j}: sqrt(d/k) over k dims")
        if seg.writer is not None:
            w = gm.get_parameter(seg.writer.args[1].target).detach().double()
            plan(seg.writer.args[1].target,
                 _set(gm, seg.writer.args[1].target, basis.T @ w), f"writes segment {j}: B_{j}^T W")
            if len(seg.writer.args) > 2 and seg.writer.args[2] is not None:
                b = seg.writer.args[2].target
                _set(gm, b, basis.T @ gm.get_parameter(b).detach().double())
            _skip(gm, seg.start, set(stream.values), previous, basis, j)
            plans.append(LayerPlan(path=f"skip.{j}", shape=(k, k), method="slicegpt",
                                   params_before=0, params_after=k * k, flops_before=0,
                                   flops_after=2 * k * k,
                                   note=f"new: B_{j - 1}^T B_{j} on the skip connection"))
        previous = basis
    return plans


def _skip(gm: fx.GraphModule, add: fx.Node, stream_values: set[fx.Node],
          previous: torch.Tensor, basis: torch.Tensor, j: int) -> None:
    """x -> x (B_{j-1}^T B_j) on the add's stream operand, a linear with weight B_j^T B_{j-1}."""
    name = f"surgeon_slice_skip_{j}"
    dtype = next(gm.parameters()).dtype
    set_param(gm, name, (basis.T @ previous).to(dtype))
    (skip,) = [a for a in add.args if a in stream_values]
    with gm.graph.inserting_before(add):
        weight = gm.graph.get_attr(name)
        moved = gm.graph.call_function(LINEAR, (skip, weight))
    moved.meta["nn_module_stack"] = add.meta.get("nn_module_stack", {})
    add.replace_input_with(skip, moved)


@register_pass(SliceResidual)
class SliceResidualPass(Pass):
    name = "slice_residual"
    preserves_architecture = False  # narrower stream, new skip linears

    def requires(self, ctx: PassContext, step: SliceResidual) -> None:
        for seg in sliceable_stream(ctx).segments:
            ctx.stats.request(gram_site(seg, ctx.captured.prefix), "gram")

    def run(self, ctx: PassContext, step: SliceResidual) -> PassResult:
        gm, prefix = ctx.captured.gm, ctx.captured.prefix
        stream = sliceable_stream(ctx)
        d = gm.get_parameter(stream.embedding.args[0].target).shape[1]
        k = d - round(d * step.percent / 100)
        if not 1 <= k < d:
            raise UserError(f"{WHAT} {step.percent:g}% of {d} dimensions keeps {k}",
                            "choose a share that deletes at least one and keeps one")
        bases = [pca_rotation(d, 0, ctx.stats[gram_site(s, prefix)]["gram"])[:, :k]
                 for s in stream.segments]
        plans = slice_stream(gm, stream, bases, prefix)
        finish(gm)
        return PassResult(modified=True, layers=plans)
