"""NaN and infinity: refused where they enter, caught where a pass makes them, and kept
out of JSON.

- weights: a model whose floating parameters are not all finite, or whose buffers
  hold a NaN, is bad input (`check_weights`, UserError naming the first bad tensors;
  buffers may hold infinities, as additive attention masks do);
- calibration statistics: the user's model overflowing on the calibration data is
  bad input too (`check_statistics`, UserError naming the layers);
- after a pass: such a tensor, on a model that had none before, is the pass's
  fault (`check_after_pass` raises FloatingPointError, which the driver reports as a
  PassError naming the pass);
- JSON: surgeon/json_safe.py turns non-finite floats into null, so reports stay valid
  JSON.

The checks are one `isfinite` sweep over each tensor: no forward pass, no copies
beyond a boolean mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from surgeon.diagnostics import UserError

if TYPE_CHECKING:
    from surgeon.calibration import CalibrationStats

SHOWN = 3  # how many bad tensors a message names


def nonfinite(named: Iterable[tuple[str, Any]], limit: int = SHOWN,
              allow_inf: bool = False) -> list[str]:
    """Names of the first `limit` floating tensors that hold a NaN or (unless
    allow_inf) an infinity."""
    bad: list[str] = []
    for name, t in named:
        if len(bad) >= limit:
            break
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            continue
        if not (t.is_floating_point() or t.is_complex()):
            continue
        t = t.detach()
        if bool(torch.isnan(t).any()) if allow_inf else not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


def bad_tensors(module: nn.Module, limit: int = SHOWN) -> list[str]:
    """Parameters that hold a NaN or an infinity, then buffers that hold a NaN (each
    tensor once, tied ones under their first name). Buffers may hold infinities: an
    additive attention mask of -inf is a legitimate buffer; a NaN never is."""
    bad = nonfinite(module.named_parameters(), limit)
    return bad + nonfinite(module.named_buffers(), limit - len(bad), allow_inf=True)


def _names(bad: list[str]) -> str:
    more = ", ..." if len(bad) >= SHOWN else ""
    return ", ".join(bad) + more


def check_weights(module: nn.Module, where: str) -> None:
    """UserError when a floating parameter of `module` is NaN or infinite, or a buffer
    is NaN (`bad_tensors`)."""
    bad = bad_tensors(module)
    if bad:
        raise UserError(f"{where} has NaN or infinite values in {_names(bad)}",
                        "surgeon only compiles models whose weights are all finite")


def check_statistics(stats: CalibrationStats) -> None:
    """UserError when calibration statistics are not finite: the model's activations
    overflowed on the calibration data (its weights were checked before)."""
    named: list[tuple[str, torch.Tensor]] = []
    for path, layer in stats.layers.items():
        named += [(f"{path} ({name})", value) for name, value in layer.sums.items()]
    for name, block in stats.blocks.items():
        named += [(f"{name} (block similarity)", block.cos_sum),
                  (f"{name} (block angular distance)", block.angular_sum)]
    bad = nonfinite(named)
    if bad:
        raise UserError(f"calibration statistics are NaN or infinite at {_names(bad)}: the "
                        "model's activations overflow on the calibration data",
                        "check the model's outputs on this data (dtype, scale of the inputs)")


def check_after_pass(module: nn.Module) -> None:
    """FloatingPointError when `module` holds a non-finite parameter or a NaN buffer
    (`bad_tensors`). Called on a model that had none before the pass: the pass made it."""
    bad = bad_tensors(module)
    if bad:
        raise FloatingPointError(f"the pass left NaN or infinite values in {_names(bad)}")
