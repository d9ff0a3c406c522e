"""The compile report: one pydantic model, printed as tables or as --json."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from rich.console import Console
from rich.table import Table

from surgeon.json_safe import json_safe
from surgeon.registry import LayerPlan


class _JsonSafe(BaseModel):
    """model_dump(mode="json") gives valid JSON: a NaN or infinite float (a fidelity
    metric of a diverged model, a layer's error) is written as null, never as a bare
    NaN/Infinity token that JSON parsers reject. Python-mode dumps keep the floats."""

    @model_serializer(mode="wrap")
    def _finite_json(self, handler: SerializerFunctionWrapHandler,
                     info: SerializationInfo) -> Any:
        data = handler(self)
        return json_safe(data) if info.mode_is_json() else data


class StepReport(_JsonSafe):
    kind: str
    line: int | None
    targets: list[str]
    params_before: int
    params_after: int
    params_delta: int
    nodes_delta: int
    modified: bool
    seconds: float
    layers: list[LayerPlan] = Field(default_factory=list)
    summary: dict[str, float] = Field(default_factory=dict)  # step-wide figures


class ArtifactReport(_JsonSafe):
    kind: str
    path: str
    bytes: int
    sha256: str
    ort_max_abs_diff: float | None = None
    ort_rel_error: float | None = None  # graphs with thresholds: ||diff|| / ||out||, real tokens
    reload_max_abs_diff: float | None = None  # save hf: transformers reload vs compiled graph
    seconds: float


class CompileReport(_JsonSafe):
    spec: str | None = None
    params_before: int
    params_after: int
    steps: list[StepReport] = Field(default_factory=list)
    fidelity: dict[str, float] = Field(default_factory=dict)
    verify: list[dict[str, Any]] = Field(default_factory=list)
    artifacts: list[ArtifactReport] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)


def _n(x: int) -> str:
    return f"{x:,}"


def layer_table(title: str, layers: list[dict[str, Any]]) -> Table:
    """Per layer: the common columns, then the pass's own detail fields (rank, score, ...)."""
    t = Table(title=title, title_justify="left")
    details = [k for k in (layers[0].get("detail") or {}) if k != "kind"] if layers else []
    for col in ("layer", "shape", "method", *[k.replace("_", " ") for k in details],
                "params", "→", "MFLOP/tok", "note"):
        t.add_column(col)
    for lp in layers:
        shape = "x".join(map(str, lp["shape"])) if lp.get("shape") else "-"
        detail = lp.get("detail") or {}
        t.add_row(lp["path"], shape, lp.get("method") or "-",
                  *[_cell(detail.get(k)) for k in details],
                  _n(lp["params_before"]), _n(lp["params_after"]),
                  f"{lp['flops_before'] / 1e6:.2f} → {lp['flops_after'] / 1e6:.2f}",
                  lp["note"] or "")
    return t


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def render(report: CompileReport, console: Console, layers: bool = True) -> None:
    if layers:
        for s in report.steps:
            if s.layers:
                title = f"line {s.line}: {s.kind}" if s.line else s.kind
                console.print(layer_table(title, [lp.model_dump() for lp in s.layers]))
    steps = Table(title="passes", title_justify="left")
    for col in ("line", "step", "targets", "params before", "params after", "Δ", "s"):
        steps.add_column(col, justify="right" if col != "step" else "left")
    for s in report.steps:
        steps.add_row(str(s.line or "-"), s.kind, str(len(s.targets)), _n(s.params_before),
                      _n(s.params_after), _n(s.params_delta), f"{s.seconds:.2f}")
    console.print(steps)
    for s in report.steps:
        if s.summary:  # step-wide figures, e.g. sparsify's target and achieved sparsity
            figures = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in s.summary.items())
            console.print(f"{s.kind} (line {s.line or '-'}): {figures}")
    ratio = report.params_after / report.params_before if report.params_before else 1.0
    console.print(f"params: {_n(report.params_before)} -> {_n(report.params_after)} "
                  f"({ratio:.1%} of the original)")
    if report.fidelity:
        f = report.fidelity
        console.print(f"held-out fidelity: cosine {f['cosine']:.5f} (min {f['cosine_min']:.5f}), "
                      f"rel_error {f['rel_error']:.5f} over {int(f['positions'])} positions, "
                      f"embedding cosine {f['embedding_cosine']:.5f}")
        if "perplexity" in f:
            console.print(f"held-out language model: perplexity {f['perplexity_original']:.4f} "
                          f"-> {f['perplexity']:.4f} ({f['perplexity_increase']:+.2%}), "
                          f"KL {f['kl']:.5f}, top-1 agreement {f['top1']:.2%}")
    for v in report.verify:
        mark = "[green]pass[/]" if v["passed"] else "[red]FAIL[/]"
        console.print(f"verify {v['metric']} {v['op']} {v['threshold']:g}: "
                      f"{v['value']:.5f} {mark}")
    for a in report.artifacts:
        extra = f", onnxruntime max |diff| {a.ort_max_abs_diff:.2e}" \
            if a.ort_max_abs_diff is not None else ""
        if a.ort_rel_error is not None:  # a graph with thresholds: entries at them may flip
            extra += f", relative error {a.ort_rel_error:.2e}"
        console.print(f"wrote {a.kind} {a.path} ({a.bytes / 1e6:.1f} MB{extra})")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def render_plan(plan: list[dict[str, Any]], params_before: int, console: Console) -> None:
    total = params_before
    for step in plan:
        console.print(layer_table(f"line {step['line']}: {step['text']}", step["layers"]))
        total += step["params_delta"]
    console.print(f"params: {_n(params_before)} -> {_n(total)} "
                  f"({total / params_before:.1%} of the original)")
