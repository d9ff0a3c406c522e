"""Pass registry: one IR step class -> one pass object.

Passes register with `@register_pass(StepClass)`; surgeon.passes imports each
pass module explicitly, so what is registered is visible in one place.
Registering a step class twice is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from surgeon.calibration import CalibrationStats
from surgeon.capture import Captured


class LayerPlan(BaseModel):
    """What a pass will do (or did) to one layer."""

    path: str
    shape: tuple[int, ...] | None = None
    rank: int | None = None
    method: str | None = None
    params_before: int
    params_after: int
    flops_before: int  # multiply-adds x2 per token
    flops_after: int
    predicted_loss: float | None = None  # fraction of the method's sigma^2 dropped
    heldout_rel_error: float | None = None  # ||(W - W')X^T|| / ||W X^T|| on held-out inputs
    jitter: float | None = None
    score: float | None = None  # layer pruning: the block's influence score
    removed: bool | None = None
    note: str | None = None


@dataclass
class PassContext:
    captured: Captured
    stats: CalibrationStats | None = None  # shared, collected once before the passes
    warnings: list[str] = field(default_factory=list)
    progress: Any = None  # callable(advance: int) or None


@dataclass
class PassResult:
    modified: bool
    layers: list[LayerPlan]


class Pass(Protocol):
    name: str

    def plan(self, ctx: PassContext, step: Any) -> list[LayerPlan]: ...

    def run(self, ctx: PassContext, step: Any) -> PassResult: ...

    # optional: def requires(self, ctx, step) -> None
    # registers the calibration statistics it needs on ctx.stats (request, request_blocks)


_PASSES: dict[type, Pass] = {}


def register_pass(step_type: type):
    def deco(cls: type) -> type:
        if step_type in _PASSES:
            raise ValueError(f"a pass for {step_type.__name__} is already registered "
                             f"({type(_PASSES[step_type]).__name__})")
        _PASSES[step_type] = cls()
        return cls

    return deco


def pass_for(step: Any) -> Pass:
    import surgeon.passes  # noqa: F401 - registers the passes

    try:
        return _PASSES[type(step)]
    except KeyError:
        raise LookupError(f"no pass registered for {type(step).__name__}") from None


def registered() -> dict[type, Pass]:
    import surgeon.passes  # noqa: F401

    return dict(_PASSES)
