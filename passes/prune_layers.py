"""prune layers: remove whole blocks of a layer list (encoder.layer, layers).

Many transformer blocks barely change the hidden state. ShortGPT (Men et al.,
2024, arXiv:2403.03853) scores block i by Block Influence, BI_i = 1 - mean over tokens of
cos(h_i, h_{i+1}), and removes the lowest. Gromov et al. ("The Unreasonable
Ineffectiveness of the Deeper Layers", 2024, arXiv:2403.17887) remove the contiguous run of n
blocks starting at l with the smallest angular distance
arccos(cos(h_l, h_{l+n}))/pi. "Reassessing Layer Pruning in LLMs" (2024, arXiv:2411.15558) finds
simply removing the last blocks a strong baseline; `first` is the other end.
Scores come from hidden states at block boundaries on the calibration data,
taken on the model as it stands (a second prune of the same list scores the
blocks that are left). The scorers are catalogue entries
(surgeon/methods/prune.py). A removed block's output uses are redirected to its input
and its nodes and parameters are deleted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from surgeon.blocks import Block, find_blocks
from surgeon.calibration import BlockStats
from surgeon.diagnostics import UserError
from surgeon.ir import PruneLayers
from surgeon.methods.prune import SCORERS
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish

Scored = tuple[list[int], list[float] | None]  # (blocks to remove, per-block scores)


class PruneDetail(BaseModel):
    """Per block: its score under the method (None: the method has none), and the verdict."""

    kind: Literal["prune_layers"] = "prune_layers"
    score: float | None
    removed: bool


def block_influence(stats: BlockStats) -> list[float]:
    """BI_i = 1 - mean cos(h_i, h_{i+1}) for each block i."""
    n = stats.cos.shape[0] - 1
    return [1.0 - float(stats.cos[i, i + 1]) for i in range(n)]


def angular_run(stats: BlockStats, n: int) -> int:
    """Start l of the n contiguous blocks with the smallest angular distance d(h_l, h_{l+n})."""
    total = stats.angular.shape[0] - 1
    distances = [float(stats.angular[lo, lo + n]) for lo in range(total - n + 1)]
    return min(range(len(distances)), key=lambda lo: (distances[lo], lo))


def _lowest(scores: list[float], n: int | None, threshold: float | None) -> list[int]:
    if threshold is not None:
        return [i for i, v in enumerate(scores) if v < threshold]
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n])


def by_block_influence(stats: BlockStats, n: int | None, threshold: float | None) -> Scored:
    scores = block_influence(stats)
    return _lowest(scores, n, threshold), scores


def by_angular(stats: BlockStats, n: int | None, threshold: float | None) -> Scored:
    """Single-block angular distances as scores; `n` removes the closest contiguous run."""
    total = stats.angular.shape[0] - 1
    scores = [float(stats.angular[i, i + 1]) for i in range(total)]
    if threshold is not None:
        return _lowest(scores, None, threshold), scores
    start = angular_run(stats, n) if n else 0
    return list(range(start, start + (n or 0))), scores


def by_last(stats: BlockStats, n: int | None, threshold: float | None) -> Scored:
    total = stats.cos.shape[0] - 1
    return list(range(total - (n or 0), total)), None


def by_first(stats: BlockStats, n: int | None, threshold: float | None) -> Scored:
    return list(range(n or 0)), None


def select(step: PruneLayers, stats: BlockStats, total: int) -> Scored:
    """(indices of the blocks to remove, per-block scores shown in the report)."""
    n = None
    if step.mode != "where":
        n = step.count if step.mode == "remove" else total - (step.count or 0)
        if n < 0 or n >= total:
            raise UserError(f"prune layers {step.layers!r}: {step.mode} {step.count} of "
                            f"{total} layers is impossible; remove between 0 and {total - 1}")
    return SCORERS[step.by].function(stats, n, step.threshold)


def _remove(gm, block: Block) -> None:
    inside = set(block.nodes)
    block.output.replace_all_uses_with(block.input, delete_user_cb=lambda u: u not in inside)
    for node in reversed(block.nodes):  # explicit: DCE keeps impure nodes (assertions)
        if not node.users:
            gm.graph.erase_node(node)


@register_pass(PruneLayers)
class PruneLayersPass(Pass):
    name = "prune_layers"

    def requires(self, ctx: PassContext, step: PruneLayers) -> None:
        ctx.stats.request_blocks(step.layers)

    def _decide(self, ctx: PassContext, step: PruneLayers) -> tuple[list[Block], list[LayerPlan]]:
        blocks = find_blocks(ctx.captured, step.layers)
        if ctx.stats is None or step.layers not in ctx.stats.blocks:
            raise ValueError("prune layers needs block statistics (requires() was not run)")
        if len(blocks) != ctx.stats.blocks[step.layers].cos.shape[0] - 1:
            raise ValueError("block statistics describe another graph than this one")
        removed, scores = select(step, ctx.stats.blocks[step.layers], len(blocks))
        if len(removed) >= len(blocks):
            raise UserError(f"prune layers {step.layers!r}: every layer scores below the "
                            "threshold; at least one must stay")
        gm = ctx.captured.gm
        plans = []
        for i, block in enumerate(blocks):
            params = block.params(gm)
            gone = i in removed
            detail = PruneDetail(score=None if scores is None else scores[i], removed=gone)
            plans.append(LayerPlan(path=block.path, method=step.by, detail=detail,
                                   params_before=params, params_after=0 if gone else params,
                                   flops_before=2 * params, flops_after=0 if gone else 2 * params))
        return blocks, plans

    def run(self, ctx: PassContext, step: PruneLayers) -> PassResult:
        blocks, plans = self._decide(ctx, step)
        gone = [b for b, p in zip(blocks, plans, strict=True) if p.detail.removed]
        for block in sorted(gone, key=lambda b: -b.index):  # last first: chains of removals
            _remove(ctx.captured.gm, block)
        finish(ctx.captured.gm)
        return PassResult(modified=bool(gone), layers=plans)
