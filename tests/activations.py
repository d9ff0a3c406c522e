"""Independent reference for statistics tests: layer inputs stored with forward
hooks on the eager model, real (unmasked) tokens only, in float64."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def stored_inputs(run: Callable[..., object], module: nn.Module, batches: Iterable) -> torch.Tensor:
    rows = []
    for batch in batches:
        seen: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda m, args, out, s=seen: s.append(args[0]))
        with torch.no_grad():
            run(*batch.inputs)
        handle.remove()
        rows.append(seen[0].detach()[batch.mask].double())
    return torch.cat(rows)
