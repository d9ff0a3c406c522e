"""Emitter registry: one output IR class -> the function that writes it.

Emitters register with `@register_emitter(OutputClass, ...)`; surgeon.emit
imports each emitter module explicitly. An emitter declares what it needs of
the compiled model, and the driver checks those needs against what the passes
declare they do (surgeon/registry.py), before any work is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgeon import ir
from surgeon.capture import Captured
from surgeon.report import ArtifactReport, CompileReport


@dataclass
class EmitContext:
    """What an emitter may read: the compiled graph, the spec, the loaded model, the report."""

    captured: Captured
    spec: ir.Spec
    loaded: Any  # surgeon.sources.LoadedModel, or None (a model handed to the Python API)
    report: CompileReport
    paths: dict[Any, Path] = field(default_factory=dict)  # output -> checked destination

    def path(self, out: Any) -> Path:
        """Where an output is written: its destination as surgeon/outputs.py resolved it."""
        return self.paths[out]


@dataclass(frozen=True)
class Emitter:
    write: Callable[[EmitContext, Any], ArtifactReport]
    # the model keeps its original module structure (no pass with preserves_architecture=False
    # is left standing; adapters count as standing until a fold)
    needs_architecture: bool = False
    needs_adapters: bool = False  # adapters are in the final model
    dtypes: tuple[str, ...] | None = None  # the model dtypes it can write (None: any)


_EMITTERS: dict[type, Emitter] = {}


def register_emitter(output_type: type, *, needs_architecture: bool = False,
                     needs_adapters: bool = False, dtypes: tuple[str, ...] | None = None):
    def deco(fn: Callable[[EmitContext, Any], ArtifactReport]):
        if output_type in _EMITTERS:
            raise ValueError(f"an emitter for {output_type.__name__} is already registered")
        _EMITTERS[output_type] = Emitter(fn, needs_architecture, needs_adapters, dtypes)
        return fn

    return deco


def emitter_for(out: Any) -> Emitter:
    try:
        return _EMITTERS[type(out)]
    except KeyError:
        raise LookupError(f"no emitter registered for {type(out).__name__}") from None
