"""fold: merge every adapter into its base weight, W <- W + (alpha/r) B A
(DoRA: W <- m * (W + (alpha/r) B A) / ||W + (alpha/r) B A||_row).

LoRA (arXiv:2106.09685) and DoRA (arXiv:2402.09353) both merge this way.
Exact up to float rounding: the folded linear computes what the adapted pair
did, so a fine-tuned model ships as a plain dense graph (ONNX included).
"""

from __future__ import annotations

from surgeon.adapters import ADAPTER_META, AdapterDetail, adapter_nodes
from surgeon.ir import Fold
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish, set_param


@register_pass(Fold)
class FoldPass(Pass):
    name = "fold"
    invalidates_statistics = False  # exact: every layer sees what it saw before
    adapters = "fold"

    def _plan(self, ctx: PassContext) -> list[LayerPlan]:
        gm = ctx.captured.gm
        plans = []
        for node in adapter_nodes(gm):
            meta = node.meta[ADAPTER_META]
            adapter = gm.get_submodule(meta["module"])
            w = gm.get_parameter(meta["weight"])
            extra = sum(p.numel() for p in adapter.parameters())
            path = meta["module"].removesuffix(".adapter").removeprefix(ctx.captured.prefix)
            plans.append(LayerPlan(path=path, shape=tuple(w.shape), method="fold",
                                   params_before=w.numel() + extra, params_after=w.numel(),
                                   flops_before=2 * (w.numel() + extra),
                                   flops_after=2 * w.numel(),
                                   detail=AdapterDetail(rank=meta["rank"])))
        return plans

    def run(self, ctx: PassContext, step: Fold) -> PassResult:
        gm = ctx.captured.gm
        plans = self._plan(ctx)
        folded: set[str] = set()
        for node in adapter_nodes(gm):
            meta = node.meta[ADAPTER_META]
            base, delta = node.args
            if meta["module"] not in folded:  # a shared weight folds once
                adapter = gm.get_submodule(meta["module"])
                w = gm.get_parameter(meta["weight"]).detach()
                merged = adapter.merged(w).detach().to(w.dtype)
                set_param(gm, meta["weight"], merged)
                folded.add(meta["module"])
            node.replace_all_uses_with(base)
            gm.graph.erase_node(node)
            gm.graph.erase_node(delta)
        for module in folded:
            owner, _, name = module.rpartition(".")
            delattr(gm.get_submodule(owner), name)
        finish(gm)
        return PassResult(modified=bool(plans), layers=plans)
