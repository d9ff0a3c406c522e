"""The low-rank adapter modules that `adapter` inserts beside a linear.

LoRA (Hu et al., 2021) and DoRA (Liu et al., 2024, "Weight-Decomposed Low-Rank
Adaptation"): DoRA learns a magnitude per output row on top of the LoRA
direction, W' = m * (W + s B A) / ||W + s B A||_row, with the norm treated as a
constant in backprop (the paper's section 4.3, as PEFT does).

Inits: zero (LoRA: kaiming-uniform A, B = 0), gaussian (A ~ N(0, 1/r), B = 0),
pissa (principal singular triplets of W, residual base; Meng et al., 2024),
eva (A = top-r principal components of the layer's calibration inputs, B = 0;
Paischer et al., 2024, "One Initialization to Rule them All").

delta(x) = scaling * B(A(dropout(x))), scaling = alpha / r, so the adapted layer
computes linear(x, W, b) + delta(x). It is a submodule (not inlined ops) so that
dropout follows .train()/.eval() and PEFT's names map one to one: <path>.lora_A,
<path>.lora_B.
"""

from __future__ import annotations

import math
import operator
from typing import Literal

import torch
from pydantic import BaseModel
from torch import fx, nn
from torch.nn import functional as F

from surgeon.calibration import LayerStats
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.registry import LayerPlan

ADAPTER_META = "surgeon_adapter"  # on the add node: {"module": ..., "weight": ..., "init": ...}


class LoraAdapter(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 dropout: float):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.use_rslora = False  # PEFT's rank-stabilised scaling alpha / sqrt(r)

    def rslora(self) -> LoraAdapter:
        self.use_rslora, self.scaling = True, self.alpha / math.sqrt(self.rank)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def merged(self, weight: torch.Tensor) -> torch.Tensor:
        """The base weight with this adapter folded in (float64 for the sum)."""
        return weight.double() + self.delta_weight().double()


class DoraAdapter(LoraAdapter):
    """DoRA's extra output beside the base linear, PEFT's formula term for term.

    delta = (m/n - 1) * (x W^T) + (m/n) * s * B A x, n = ||W + s B A||_row
    (detached), so base + delta = (m/n) (W + s B A) x + b. It needs the base
    linear's output, weight and bias as inputs; with dropout active in training
    the base term is recomputed on the dropped-out input, as PEFT does.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 dropout: float):
        super().__init__(in_features, out_features, rank, alpha, dropout)
        self.lora_magnitude_vector = nn.Parameter(torch.ones(out_features))

    def init_magnitude(self, weight: torch.Tensor) -> None:
        """m = ||W + s B A||_row, so inserting the adapter changes no output."""
        with torch.no_grad():
            self.lora_magnitude_vector.copy_(LoraAdapter.merged(self, weight).norm(dim=1))

    def forward(self, x: torch.Tensor, base: torch.Tensor,  # type: ignore[override]
                weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        xd = self.dropout(x)
        direction = weight + self.scaling * (self.lora_B.weight @ self.lora_A.weight).detach()
        scale = self.lora_magnitude_vector / direction.norm(dim=1).detach()
        if self.training and not isinstance(self.dropout, nn.Identity):
            base = F.linear(xd, weight)
        elif bias is not None:
            base = base - bias
        return (scale - 1) * base + scale * self.lora_B(self.lora_A(xd)) * self.scaling

    def merged(self, weight: torch.Tensor) -> torch.Tensor:
        direction = super().merged(weight)
        scale = self.lora_magnitude_vector.detach().double() / direction.norm(dim=1)
        return scale[:, None] * direction


def init_lora(adapter: LoraAdapter, init: str, weight: torch.Tensor,
              generator: torch.Generator, stats: LayerStats | None = None
              ) -> torch.Tensor | None:
    """Initialise A and B by the catalogue's init (surgeon/methods/adapter.py);
    returns the new base weight (PiSSA's residual) or None."""
    from surgeon.methods.adapter import INITS

    with torch.no_grad():
        return INITS[init].function(adapter, weight, generator, stats)


def init_zero(adapter: LoraAdapter, weight: torch.Tensor, generator: torch.Generator,
              stats: LayerStats | None) -> None:
    """LoRA's default: kaiming-uniform A (a = sqrt(5)), as nn.Linear and PEFT; B = 0."""
    bound = 1.0 / math.sqrt(adapter.lora_A.weight.shape[1])
    adapter.lora_A.weight.uniform_(-bound, bound, generator=generator)
    adapter.lora_B.weight.zero_()  # B = 0: inserting the adapter changes no output


def init_gaussian(adapter: LoraAdapter, weight: torch.Tensor, generator: torch.Generator,
                  stats: LayerStats | None) -> None:
    adapter.lora_A.weight.normal_(0.0, 1.0 / adapter.rank, generator=generator)
    adapter.lora_B.weight.zero_()


def init_pissa(adapter: LoraAdapter, weight: torch.Tensor, generator: torch.Generator,
               stats: LayerStats | None) -> torch.Tensor:
    """Principal r singular triplets, split over A and B as PEFT does; returns the residual."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = (s[: adapter.rank] / adapter.scaling).sqrt()
    adapter.lora_A.weight.copy_((root[:, None] * vh[: adapter.rank]).to(weight.dtype))
    adapter.lora_B.weight.copy_((u[:, : adapter.rank] * root[None, :]).to(weight.dtype))
    # kept (not saved with the model) to express the trained adapter on the
    # ORIGINAL base later: W_res + s B A = W + s (B A - B0 A0)
    adapter.register_buffer("init_A", adapter.lora_A.weight.detach().clone(), False)
    adapter.register_buffer("init_B", adapter.lora_B.weight.detach().clone(), False)
    return (weight.double() - adapter.delta_weight().double()).to(weight.dtype)


def init_eva(adapter: LoraAdapter, weight: torch.Tensor, generator: torch.Generator,
             stats: LayerStats | None) -> None:
    """A: top-r principal directions of the layer's inputs; B = 0."""
    if stats is None:
        raise ValueError("EVA needs the input covariance from calibration")
    _, vectors = torch.linalg.eigh(stats.covariance().double())  # ascending eigenvalues
    top = vectors[:, -adapter.rank:].flip(1).T
    adapter.lora_A.weight.copy_(top.to(weight.dtype))
    adapter.lora_B.weight.zero_()


def adapter_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if ADAPTER_META in n.meta]


def has_adapter(gm: fx.GraphModule, weight: str) -> bool:
    owner = gm.get_submodule(weight.removesuffix(".weight"))
    return isinstance(getattr(owner, "adapter", None), LoraAdapter)


def freeze_base(gm: fx.GraphModule) -> None:
    """Freeze every parameter except adapters' (earlier adapter steps keep training)."""
    for p in gm.parameters():
        p.requires_grad_(False)
    for m in gm.modules():
        if isinstance(m, LoraAdapter):
            for p in m.parameters():
                p.requires_grad_(True)


class AdapterDetail(BaseModel):
    """Per layer: the adapter's rank (0: EVA left the layer none)."""

    kind: Literal["adapter"] = "adapter"
    rank: int


def layer_plan(site: LinearSite, rank: int, extra: int, method: str,
               note: str | None = None) -> LayerPlan:
    """The plan row of an adapter that adds `extra` parameters beside a linear."""
    dense = 2 * site.out_features * site.in_features
    return LayerPlan(path=site.path, shape=(site.out_features, site.in_features),
                     method=method, params_before=site.params, params_after=site.params + extra,
                     flops_before=dense, flops_after=dense + 2 * extra, note=note,
                     detail=AdapterDetail(rank=rank))


def check_free(gm: fx.GraphModule, site: LinearSite) -> None:
    if has_adapter(gm, site.weight):
        raise UserError(f"{site.path} already has an adapter", "fold it before adding another")


def install(gm: fx.GraphModule, site: LinearSite, adapter: LoraAdapter, init: str) -> None:
    """Register the adapter under the linear's module and add its output to every use."""
    owner = site.weight.removesuffix(".weight")
    adapter.train(gm.training)  # a new module starts in train mode; follow the graph
    gm.get_submodule(owner).add_module("adapter", adapter)
    for node in site.nodes:
        _attach(gm, node, f"{owner}.adapter", site.weight, adapter, init)


def _attach(gm: fx.GraphModule, node: fx.Node, module: str, weight: str, adapter: LoraAdapter,
            init: str) -> None:
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
