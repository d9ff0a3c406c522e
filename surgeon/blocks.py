"""Blocks of a layer list (encoder.layer.0, .1, ...) in the captured graph.

A block is the set of nodes whose module stack passes through
`<list>.<i>`. Its hidden-state output is the one node of the block that nodes
outside it use; its hidden-state input is the value from outside the block
with the same shape. Layer pruning redirects the output's users to the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import fx

from surgeon.capture import Captured, is_param
from surgeon.diagnostics import UserError
from surgeon.targets import closest


@dataclass
class Block:
    index: int
    path: str
    nodes: list[fx.Node]
    input: fx.Node
    output: fx.Node

    def params(self, gm: fx.GraphModule) -> int:
        # get_attr nodes carry no module stack, so they are the block's inputs, not members
        targets = {a.target for n in self.nodes for a in n.all_input_nodes if a.op == "get_attr"}
        return sum(gm.get_parameter(t).numel() for t in targets if is_param(gm, t))


def _block_index(node: fx.Node, pattern: re.Pattern[str], prefix: str) -> int | None:
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        rel = path[len(prefix):] if prefix and path.startswith(prefix) else path
        m = pattern.fullmatch(rel)
        if m:
            return int(m.group(1))
    return None


def _shape(node: fx.Node) -> tuple | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def find_blocks(captured: Captured, layers: str) -> list[Block]:
    """The blocks of `layers` in order, or a UserError saying why they cannot be found."""
    pattern = re.compile(re.escape(layers) + r"\.(\d+)")
    members: dict[int, list[fx.Node]] = {}
    for node in captured.gm.graph.nodes:
        i = _block_index(node, pattern, captured.prefix)
        if i is not None:
            members.setdefault(i, []).append(node)
    if not members:
        lists = _layer_lists(captured)
        near = closest(layers, lists) or lists
        hint = f"layer lists: {', '.join(near[:5])}" if near else None
        raise UserError(f"{layers!r} is not a layer list of the model (no {layers}.0, "
                        f"{layers}.1, ...)", hint)
    blocks = []
    for i in sorted(members):
        blocks.append(_block(i, f"{layers}.{i}", members[i]))
    return blocks


def _block(index: int, path: str, nodes: list[fx.Node]) -> Block:
    inside = set(nodes)
    outputs = [n for n in nodes if any(u not in inside for u in n.users)]
    if len(outputs) != 1:
        raise UserError(f"block {path} has {len(outputs)} values used outside it; layer pruning "
                        "needs exactly one (its hidden state)")
    out = outputs[0]
    inputs = {a for n in nodes for a in n.all_input_nodes
              if a not in inside and a.op != "get_attr" and _shape(a) == _shape(out)}
    if len(inputs) != 1 or _shape(out) is None:
        raise UserError(f"block {path}: cannot tell its hidden-state input "
                        f"({len(inputs)} candidates of the output's shape)")
    return Block(index, path, nodes, inputs.pop(), out)


def _layer_lists(captured: Captured) -> list[str]:
    """Module paths that have numbered children (candidates for `prune layers`)."""
    found = set()
    for site in captured.linear_sites():
        parts = site.split(".")
        for j, part in enumerate(parts):
            if part.isdigit() and j:
                found.add(".".join(parts[:j]))
    return sorted(found)
