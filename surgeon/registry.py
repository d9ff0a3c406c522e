"""Pass registry: one IR step class -> one pass object, and what passes report.

Passes subclass `Pass` and register with `@register_pass(StepClass)`;
surgeon.passes imports each pass module explicitly, so what is registered is
visible in one place. Registering a step class twice is refused. A pass
declares what it does to the model beyond its own rewrite (does the
architecture survive, do later statistics go stale, does it add or fold
adapters), so the driver and the emitters never special-case step kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, SerializeAsAny

from surgeon.calibration import CalibrationStats
from surgeon.capture import Captured


class LayerPlan(BaseModel):
    """What a pass will do (or did) to one layer; what only one pass reports is its
    typed `detail`."""

    path: str
    shape: tuple[int, ...] | None = None
    method: str | None = None
    params_before: int
    params_after: int
    flops_before: int  # multiply-adds x2 per token
    flops_after: int
    note: str | None = None
    detail: SerializeAsAny[BaseModel] | None = None


@dataclass
class PassContext:
    captured: Captured
    stats: CalibrationStats | None = None  # collected on the graph as it stands now
    warnings: list[str] = field(default_factory=list)


@dataclass
class PassResult:
    modified: bool
    layers: list[LayerPlan]
    summary: dict[str, float] = field(default_factory=dict)  # step-wide figures


class Pass:
    """A graph pass for one IR step kind."""

    name: ClassVar[str]
    # the model keeps its original module structure (a transformers checkpoint can hold it)
    preserves_architecture: ClassVar[bool] = True
    # when it modifies the graph, later layers see other inputs: statistics go stale
    invalidates_statistics: ClassVar[bool] = True
    adapters: ClassVar[Literal["add", "fold"] | None] = None

    def requires(self, ctx: PassContext, step: Any) -> None:
        """Request the calibration statistics `run` will read (ctx.stats.request...)."""

    def run(self, ctx: PassContext, step: Any) -> PassResult:
        raise NotImplementedError


_PASSES: dict[type, Pass] = {}


def register_pass(step_type: type):
    def deco(cls: type[Pass]) -> type[Pass]:
        if step_type in _PASSES:
            raise ValueError(f"a pass for {step_type.__name__} is already registered "
                             f"({type(_PASSES[step_type]).__name__})")
        _PASSES[step_type] = cls()
        return cls

    return deco


def pass_for(step: Any) -> Pass:
    """The registered pass of a step (surgeon.passes must have been imported)."""
    try:
        return _PASSES[type(step)]
    except KeyError:
        raise LookupError(f"no pass registered for {type(step).__name__}") from None
