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


def not_a_module() -> str:
    return "nope"
