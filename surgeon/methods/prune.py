"""Layer-pruning scorers: which blocks of a layer list `prune layers` removes
(passes/prune_layers.py). A scorer returns the blocks to remove and per-block
scores for the report (None where it has no scores)."""

from surgeon.catalogue import Catalogue, Method
from surgeon.methods import papers

SCORERS = Catalogue("prune", "layer-pruning method")

SCORERS.add(Method(
    "block_influence", "BI_i = 1 - mean cos(h_i, h_i+1); removes the lowest-influence blocks",
    papers.SHORTGPT, "surgeon.passes.prune_layers:by_block_influence", needs=("blocks",),
    extra={"scores": True}))
SCORERS.add(Method(
    "angular", "removes the n contiguous blocks with the least angular distance "
    "arccos(cos(h_l, h_l+n))/pi", papers.DEEPER_LAYERS,
    "surgeon.passes.prune_layers:by_angular", needs=("blocks",), extra={"scores": True}))
SCORERS.add(Method(
    "last", "removes the last n blocks (a strong baseline)", papers.REASSESSING,
    "surgeon.passes.prune_layers:by_last", needs=("blocks",), extra={"scores": False}))
SCORERS.add(Method(
    "first", "removes the first n blocks (the other end, for comparison)", papers.REASSESSING,
    "surgeon.passes.prune_layers:by_first", needs=("blocks",), extra={"scores": False}))
