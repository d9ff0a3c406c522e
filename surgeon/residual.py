"""The residual stream of a pre-norm transformer in a captured graph: who writes it and
who reads it.

Walked from the token embedding: each value of the stream may feed (a) a normalisation
layer, whose reader linears read the stream (q/k/v, gate/up, lm_head), or (b) an add with
a branch whose last op is a linear (o_proj, down_proj: the writers), the add's result
being the next value of the stream. Anything else reading the stream (a post-norm
model's norm sits *on* the stream, a mean-centring LayerNorm does not commute with a
rotation, a scaled residual...) is named in the error, because a rotation of such a
stream would not be exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from surgeon.diagnostics import UserError
from surgeon.norms import _IGNORED, _TRANSPARENT, NormSite, find_norms
from surgeon.rewrite import LINEAR

aten = torch.ops.aten
# ops whose output is the stream itself, as far as a rotation is concerned
_ALIASES = {aten.to.dtype, aten._to_copy.default, aten.clone.default, aten.contiguous.default,
            aten.alias.default}


@dataclass
class Segment:
    """The stream between two residual adds (the first starts at the embedding): the add
    that made it and the linear whose output that add brought in (None for the first),
    the norm that reads it, the add it flows into next (None for the last)."""

    start: fx.Node
    writer: fx.Node | None = None
    norm: NormSite | None = None
    add: fx.Node | None = None


@dataclass
class ResidualStream:
    embedding: fx.Node  # aten.embedding: its weight rows are stream vectors
    writers: list[fx.Node] = field(default_factory=list)  # linears adding into the stream
    norms: list[NormSite] = field(default_factory=list)  # norms reading the stream
    values: list[fx.Node] = field(default_factory=list)  # the stream: embedding, then adds
    segments: list[Segment] = field(default_factory=list)  # in graph order

    @property
    def readers(self) -> list[fx.Node]:
        return [r for s in self.norms for r in s.readers]


def _norm_owner(node: fx.Node, norms: dict[str, NormSite], prefix: str) -> NormSite | None:
    stack = node.meta.get("nn_module_stack") or {}
    owner = list(stack.values())[-1][0] if stack else ""
    return norms.get(owner[len(prefix):] if prefix and owner.startswith(prefix) else owner)


def _branch_writer(value: fx.Node) -> fx.Node | None:
    """The linear whose output `value` is (through transparent ops), if any."""
    while value.op == "call_function" and value.target in _TRANSPARENT:
        value = value.args[0]
    return value if value.op == "call_function" and value.target == LINEAR else None


def find_stream(gm: fx.GraphModule, prefix: str, what: str) -> ResidualStream:
    sites = find_norms(gm, prefix)
    on_stream = next((s for s in sites if any(o.target == aten.add.Tensor for o in s.other)),
                     None)
    if on_stream is not None:
        raise UserError(f"{what}: this is a post-norm model: {on_stream.path}'s output is "
                        "the residual stream itself (it feeds a residual add), and a "
                        "rotation does not commute with a norm on the stream, so it "
                        "cannot be exact",
                        "residual rotations need a pre-norm transformer (Llama, Qwen2, "
                        "Mistral ...)")
    lookups = [n for n in gm.graph.nodes if n.target == aten.embedding.default]
    if len(lookups) != 1:
        raise UserError(f"{what}: needs one token embedding, the graph has {len(lookups)}",
                        "rotations apply to transformer language models")
    norms = {s.path: s for s in sites}
    stream = ResidualStream(lookups[0])
    segment = {lookups[0]: Segment(lookups[0])}  # every stream value -> its segment
    todo = [lookups[0]]
    while todo:
        value = todo.pop()
        stream.values.append(value)
        here = segment[value]
        for user in value.users:
            if user.op == "call_function" and user.target in _IGNORED:
                continue
            if user.op == "call_function" and user.target in _ALIASES:
                segment[user] = here  # the same values (a no-op cast a norm starts with)
                todo.append(user)
                continue
            norm = _norm_owner(user, norms, prefix)
            if norm is not None and user.target != aten.add.Tensor:
                if norm not in stream.norms:
                    stream.norms.append(norm)
                here.norm = norm
                continue
            if user.target == aten.add.Tensor and len(user.args) == 2:
                other = user.args[1] if user.args[0] is value else user.args[0]
                writer = _branch_writer(other) if isinstance(other, fx.Node) else None
                if writer is not None:
                    stream.writers.append(writer)
                    here.add = user
                    segment[user] = Segment(user, writer)
                    todo.append(user)
                    continue
            raise UserError(f"{what}: the residual stream also feeds {user.name} "
                            f"({user.target}) at {_where(user, prefix)}, so a rotation of it "
                            "would not be exact",
                            "residual rotations need a pre-norm transformer (Llama, Qwen2, "
                            "Mistral ...) whose stream only norms and residual adds read")
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    stream.segments = sorted({id(s): s for s in segment.values()}.values(),
                             key=lambda s: order[s.start])
    return stream


def _where(node: fx.Node, prefix: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else "the top level"
    return path.removeprefix(prefix) or "the top level"


def check_rotatable(stream: ResidualStream, gm: fx.GraphModule, what: str) -> None:
    """Every norm on the stream is an RMS norm without a scale (folded), or the rotation
    would not commute with it."""
    for s in stream.norms:
        if s.node.target == aten.layer_norm.default:
            raise UserError(f"{what}: {s.path} is a LayerNorm, which subtracts the mean; a "
                            "rotation does not commute with that",
                            "residual rotations need RMS norms (Llama, Qwen2, Mistral ...)")
        if not bool((gm.get_parameter(s.weight) == 1).all()):
            raise UserError(f"{what}: {s.path} still has its learned scale",
                            "put 'fold norms' before the rotation")
        if s.other:
            raise UserError(f"{what}: {s.path}'s output feeds {s.other[0].name}, not only "
                            "linears")
