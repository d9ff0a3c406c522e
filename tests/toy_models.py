"""Models for `model python` specs in tests (imported only under --trust-code)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d: int = 32, hidden: int = 96):
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP()


def odd_mlp() -> nn.Module:
    """Widths no Hadamard matrix has (10 and 50)."""
    torch.manual_seed(0)
    return MLP(d=10, hidden=50)


def not_a_module() -> str:
    return "nope"


class Block(nn.Module):
    """A pre-norm residual MLP block: one hidden state in, one out (prunable)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Stack(nn.Module):
    def __init__(self, d: int = 16, hidden: int = 32, depth: int = 4):
        super().__init__()
        self.embed = nn.Linear(d, d)
        self.layers = nn.ModuleList(Block(d, hidden) for _ in range(depth))
        self.head = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.layers:
            h = block(h)
        return self.head(h)


def tiny_stack() -> nn.Module:
    """Four residual blocks over 16 features: every pass kind runs on it in seconds. The
    norms' scales and shifts are drawn away from LayerNorm's identity start, as trained
    ones are (so `fold norms` has something to fold)."""
    torch.manual_seed(0)
    model = Stack()
    with torch.no_grad():
        for block in model.layers:
            block.norm.weight.normal_(1.0, 0.2)
            block.norm.bias.normal_(0.0, 0.2)
    return model
