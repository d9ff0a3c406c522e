"""prune layers: remove whole blocks of a layer list (encoder.layer, layers).

Many transformer blocks barely change the hidden state. ShortGPT (Men et al.,
2024) scores block i by Block Influence, BI_i = 1 - mean over tokens of
cos(h_i, h_{i+1}), and removes the lowest. Gromov et al. ("The Unreasonable
Ineffectiveness of the Deeper Layers", 2024) remove the contiguous run of n
blocks starting at l with the smallest angular distance
arccos(cos(h_l, h_{l+n}))/pi. "Reassessing Layer Pruning in LLMs" (2024) finds
simply removing the last blocks a strong baseline; `first` is the other end.
Scores come from hidden states at block boundaries collected once on the
calibration data. A removed block's output uses are redirected to its input
and its nodes and parameters are deleted.
"""

from __future__ import annotations

from surgeon.blocks import Block, find_blocks
from surgeon.calibration import BlockStats
from surgeon.diagnostics import UserError
from surgeon.ir import PruneLayers
from surgeon.registry import LayerPlan, PassContext, PassResult, register_pass
from surgeon.rewrite import finish


def block_influence(stats: BlockStats) -> list[float]:
    """BI_i = 1 - mean cos(h_i, h_{i+1}) for each block i."""
    n = stats.cos.shape[0] - 1
    return [1.0 - float(stats.cos[i, i + 1]) for i in range(n)]


def angular_run(stats: BlockStats, n: int) -> int:
    """Start l of the n contiguous blocks with the smallest angular distance d(h_l, h_{l+n})."""
    total = stats.angular.shape[0] - 1
    distances = [float(stats.angular[lo, lo + n]) for lo in range(total - n + 1)]
    return min(range(len(distances)), key=lambda lo: (distances[lo], lo))


def select(step: PruneLayers, stats: BlockStats, total: int) -> tuple[list[int], list[float]]:
    """(indices of the blocks to remove, per-block scores shown in the report)."""
    bi = block_influence(stats)
    single_angular = [float(stats.angular[i, i + 1]) for i in range(total)]
    scores = single_angular if step.by == "angular" else bi
    if step.mode == "where":
        assert step.threshold is not None
        return [i for i in range(total) if scores[i] < step.threshold], scores
    n = step.count if step.mode == "remove" else total - (step.count or 0)
    if n < 0 or n >= total:
        raise UserError(f"prune layers {step.layers!r}: {step.mode} {step.count} of {total} "
                        f"layers is impossible; remove between 0 and {total - 1}")
    if n == 0:
        return [], scores
    if step.by == "block_influence":
        return sorted(sorted(range(total), key=lambda i: (bi[i], i))[:n]), scores
    if step.by == "angular":
        start = angular_run(stats, n)
        return list(range(start, start + n)), scores
    return (list(range(total - n, total)) if step.by == "last" else list(range(n))), scores


def _remove(gm, block: Block) -> None:
    inside = set(block.nodes)
    block.output.replace_all_uses_with(block.input, delete_user_cb=lambda u: u not in inside)
    for node in reversed(block.nodes):  # explicit: DCE keeps impure nodes (assertions)
        if not node.users:
            gm.graph.erase_node(node)


@register_pass(PruneLayers)
class PruneLayersPass:
    name = "prune_layers"

    def requires(self, ctx: PassContext, step: PruneLayers) -> None:
        ctx.stats.request_blocks(step.layers)

    def _decide(self, ctx: PassContext, step: PruneLayers) -> tuple[list[Block], list[LayerPlan]]:
        blocks = find_blocks(ctx.captured, step.layers)
        if ctx.stats is None or step.layers not in ctx.stats.blocks:
            raise ValueError("prune layers needs block statistics (requires() was not run)")
        if len(blocks) != ctx.stats.blocks[step.layers].cos.shape[0] - 1:
            raise UserError(f"prune layers {step.layers!r} again: its scores describe the "
                            "original model, whose blocks an earlier step already removed",
                            "prune a layer list in one statement (remove the total count)")
        removed, scores = select(step, ctx.stats.blocks[step.layers], len(blocks))
        if len(removed) >= len(blocks):
            raise UserError(f"prune layers {step.layers!r}: every layer scores below the "
                            "threshold; at least one must stay")
        gm = ctx.captured.gm
        plans = []
        for block, score in zip(blocks, scores, strict=True):
            params = block.params(gm)
            gone = block.index in removed
            plans.append(LayerPlan(path=block.path, method=step.by, score=score, removed=gone,
                                   params_before=params, params_after=0 if gone else params,
                                   flops_before=2 * params, flops_after=0 if gone else 2 * params))
        return blocks, plans

    def plan(self, ctx: PassContext, step: PruneLayers) -> list[LayerPlan]:
        return self._decide(ctx, step)[1]

    def run(self, ctx: PassContext, step: PruneLayers) -> PassResult:
        blocks, plans = self._decide(ctx, step)
        gone = [b for b, p in zip(blocks, plans, strict=True) if p.removed]
        for block in sorted(gone, key=lambda b: -b.index):  # last first: chains of removals
            _remove(ctx.captured.gm, block)
        finish(ctx.captured.gm)
        return PassResult(modified=bool(gone), layers=plans)
