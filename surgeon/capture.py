"""Capture: model -> torch.export graph with module-path metadata.

`torch.fx.symbolic_trace` cannot trace whole HF models (and transformers 5
removed its fx tracer); torch.export can, with dynamic batch and sequence dims.
Passes rewrite the unlifted GraphModule from `ExportedProgram.module()`, whose
parameters keep their original qualified names (get_attr nodes) and whose
nodes keep `nn_module_stack`. Emitters re-export the rewritten module.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.export import Dim, ExportedProgram

from surgeon.corpus import CalibrationData
from surgeon.diagnostics import UserError
from surgeon.rewrite import FACTOR_META, LINEAR, finish

TEXT_PREFIX = "model."
_LOCAL_META = ("stack_trace", "from_node")


class TextEncoder(nn.Module):
    """Fixed (input_ids, attention_mask) -> last_hidden_state: one tensor for export and ONNX."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state


class CausalLM(nn.Module):
    """Fixed (input_ids, attention_mask) -> next-token logits of a *ForCausalLM."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


@dataclass
class LinearSite:
    """A dense linear layer in the graph, addressed by its module path."""

    path: str
    weight: str  # get_attr target of the weight
    out_features: int
    in_features: int
    bias: bool
    nodes: list[fx.Node] = field(default_factory=list)

    @property
    def params(self) -> int:
        return self.out_features * self.in_features + (self.out_features if self.bias else 0)


@dataclass
class Captured:
    gm: fx.GraphModule
    data: CalibrationData
    prefix: str  # module-path prefix added by the capture entry point
    output_name: str = "output"

    def dynamic_shapes(self) -> tuple[dict[int, Dim], ...]:
        return dynamic_shapes(self.data)

    def linear_sites(self) -> dict[str, LinearSite]:
        return linear_sites(self.gm, self.prefix)

    def reexport(self) -> ExportedProgram:
        """The graph as it stands, exported again for the emitters: without the records
        that would make artifacts depend on where things live (stack traces name source
        files by absolute path, provenance records hold memory addresses), so the same
        spec and seed give the same bytes on any machine."""
        ep = export(self.gm, self.data.example, self.dynamic_shapes())
        for node in ep.graph.nodes:
            for key in _LOCAL_META:
                node.meta.pop(key, None)
        return ep

    def num_params(self) -> int:
        return sum(p.numel() for p in self.gm.parameters())


def dynamic_shapes(data: CalibrationData) -> tuple[dict[int, Dim], ...]:
    """torch.export dims per input and axis, from the data's named dynamic dims."""
    dims = {name: Dim(name, min=lo, max=hi) if hi else Dim(name, min=lo)
            for name, (lo, hi) in data.dims.items()}
    return tuple({i: dims[n] for i, n in enumerate(names) if n} for names in data.dim_names)


@contextlib.contextmanager
def quiet():
    """torch.export and the ONNX exporter chat on stdout/stderr; keep --json output clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export(module: nn.Module, example: tuple[torch.Tensor, ...],
           dynamic_shapes: tuple[dict[int, Dim], ...]) -> ExportedProgram:
    with quiet(), torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False)


def entry_point(model: nn.Module, text: bool, causal_lm: bool = False
                ) -> tuple[nn.Module, str, str]:
    """(module to export, module-path prefix it adds, output name)."""
    if text and causal_lm:
        return CausalLM(model).eval(), TEXT_PREFIX, "logits"
    if text:
        return TextEncoder(model).eval(), TEXT_PREFIX, "last_hidden_state"
    return model.eval(), "", "output"


def capture(entry: nn.Module, data: CalibrationData, prefix: str, output_name: str) -> Captured:
    """Export `entry` (from entry_point) with the data's dynamic dims."""
    try:
        ep = export(entry, data.example, dynamic_shapes(data))
    except Exception as e:  # noqa: BLE001 - any export failure is a property of the input model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"torch.export could not capture the model: {first}",
                        "the model must export with torch.export.export(strict=False)") from None
    gm = ep.module()
    # ExportedProgram.module() makes train()/eval() raise because the exported ops
    # (dropout) are fixed in eval mode. Only modules surgeon inserts (adapters) follow
    # the mode, so nn.Module's methods are restored and the graph starts in eval.
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    gm.eval()
    _own_parameters(gm)
    # Drop what the exported output does not depend on (BERT's pooler when the entry
    # returns last_hidden_state) now, so no pass is credited with removing it.
    finish(gm)
    return Captured(gm, data, prefix, output_name)


def _own_parameters(gm: fx.GraphModule) -> None:
    """Give the graph its own Parameter objects (same storage, no copy).

    ExportedProgram.module() reuses the input model's Parameters, so a pass that
    freezes base weights (adapters) would freeze the caller's model as well. Passes
    never write weights in place (they register new tensors), so sharing storage
    is safe; tied weights stay tied.
    """
    fresh: dict[int, nn.Parameter] = {}
    for name, p in list(gm.named_parameters(remove_duplicate=False)):
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if id(p) not in fresh:
            fresh[id(p)] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
        owner._parameters[attr] = fresh[id(p)]


def module_path(node: fx.Node, prefix: str = "") -> str | None:
    """Innermost module path of a node, without the capture prefix."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path[len(prefix):] if prefix and path.startswith(prefix) else path


def linear_sites(gm: fx.GraphModule, prefix: str) -> dict[str, LinearSite]:
    """Dense linear layers keyed by module path (the weight's owner)."""
    sites: dict[str, LinearSite] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target != LINEAR or FACTOR_META in node.meta:
            continue
        w = node.args[1]
        if not isinstance(w, fx.Node) or w.op != "get_attr":
            continue
        weight = gm.get_parameter(w.target) if is_param(gm, w.target) else None
        if weight is None or weight.dim() != 2:
            continue
        owner = w.target.removesuffix(".weight")
        path = owner[len(prefix):] if owner.startswith(prefix) else owner
        bias = len(node.args) > 2 and node.args[2] is not None
        site = sites.setdefault(path, LinearSite(path, w.target, *weight.shape, bias))
        site.nodes.append(node)
    return sites


def is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False
