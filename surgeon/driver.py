"""The compiler driver: spec -> model -> graph -> passes -> verify -> artifacts.

Artifacts are written only after `verify` passes, so a failed compile leaves
no output behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from surgeon import atomic, ir
from surgeon.calibration import CalibrationStats
from surgeon.capture import Captured, capture, entry_point
from surgeon.corpus import calibration_data
from surgeon.diagnostics import PassError, UserError
from surgeon.emit.checkpoint import save_checkpoint
from surgeon.emit.hf import save_hf
from surgeon.emit.onnx import export_onnx
from surgeon.emit.peft import save_adapters
from surgeon.emit.report_dir import write_report
from surgeon.progress import Advance, bar
from surgeon.registry import PassContext, pass_for
from surgeon.report import ArtifactReport, CompileReport, StepReport
from surgeon.sources import LoadedModel, load_model
from surgeon.verify import check, fidelity


@dataclass
class CompileResult:
    module: fx.GraphModule
    report: CompileReport
    captured: Captured
    spec: ir.Spec | None = None
    loaded: LoadedModel | None = None

    def apply(self, steps: Any) -> CompileResult:
        """More IR steps on the compiled graph (e.g. `fold` after fine-tuning adapters)."""
        steps = tuple(steps)
        run_passes(self.captured, steps, self.report, stats=collect_stats(self.captured, steps))
        return self

    def write(self, outputs: Any) -> list[ArtifactReport]:
        """Write artifacts (ExportOnnx, Save, SaveHF, SaveAdapters, Report) of the graph now."""
        spec = self.spec or ir.Spec(model=ir.ModelSource(source="python", ref="api:model"))
        with atomic.transaction():  # all outputs land, or none
            written = [emit(o, self.captured, spec, self.loaded, self.report) for o in outputs]
        self.report.artifacts += written
        return written


def compile_spec(spec: ir.Spec, loaded: LoadedModel | None = None, *, trust_code: bool = False,
                 progress: bool = False) -> CompileResult:
    t0 = time.perf_counter()
    check_outputs(spec)
    loaded = loaded or load_model(spec.model, trust_code)
    reference, captured = capture_spec(spec, loaded)
    batches = len(captured.data.calibration)
    with bar(batches + 2 + len(spec.steps) + len(spec.outputs), progress) as advance:
        report = CompileReport(spec=spec.to_text(), params_before=captured.num_params(),
                               params_after=captured.num_params())
        t1 = time.perf_counter()
        stats = collect_stats(captured, spec.steps, lambda: advance("calibration statistics"))
        report.seconds["calibration"] = time.perf_counter() - t1
        run_passes(captured, spec.steps, report, advance, stats)
        advance("verify on held-out inputs")
        report.fidelity = fidelity(reference, captured.gm, captured.data.heldout)
        report.verify = check(spec.checks, report.fidelity)
        with atomic.transaction():  # all outputs land, or none
            for out in spec.outputs:
                advance(f"write {out.path}")
                report.artifacts.append(emit(out, captured, spec, loaded, report))
        advance("done")
    report.seconds["total"] = time.perf_counter() - t0
    return CompileResult(captured.gm, report, captured, spec, loaded)


def check_outputs(spec: ir.Spec) -> None:
    """What the spec alone shows an output cannot do, refused before any work is done."""
    if not any(isinstance(o, ir.SaveHF) for o in spec.outputs):
        return
    open_adapters = False
    for step in spec.steps:
        if isinstance(step, ir.Factorize):
            raise UserError("save hf needs architecture-preserving steps; factorize changes "
                            "the architecture", "use save or export onnx for factorized models")
        if isinstance(step, ir.Adapter | ir.AdapterLoad):
            open_adapters = True
        elif isinstance(step, ir.Fold):
            open_adapters = False
    if open_adapters:
        raise UserError("save hf cannot hold unfolded adapters", "add 'fold' before the outputs")


def capture_spec(spec: ir.Spec, loaded: LoadedModel) -> tuple[nn.Module, Captured]:
    """(the eager reference entry point, its captured graph) for a spec's model."""
    data = calibration_data(spec, loaded.tokenizer, loaded.max_positions)
    text = data.input_names == ("input_ids", "attention_mask") and loaded.tokenizer is not None
    entry, prefix, output_name = entry_point(loaded.module, text)
    return entry, capture(entry, data, prefix, output_name)


def _fingerprint(gm: fx.GraphModule) -> tuple[str, tuple[tuple[str, int], ...]]:
    return str(gm.graph), tuple((n, id(p)) for n, p in gm.named_parameters())


def collect_stats(captured: Captured, steps: tuple[Any, ...],
                  progress: Any = None) -> CalibrationStats:
    """Ask every pass what it needs, then run over the calibration data once."""
    stats = CalibrationStats(captured)
    ctx = PassContext(captured, stats)
    for step in steps:
        p = pass_for(step)
        if hasattr(p, "requires"):
            p.requires(ctx, step)
    stats.collect(progress)
    return stats


def run_passes(captured: Captured, steps: tuple[Any, ...], report: CompileReport,
               advance: Advance | None = None, stats: CalibrationStats | None = None) -> None:
    """Run each step's pass, lint the graph after it, and record what changed."""
    done: list[str] = []
    for step in steps:
        p = pass_for(step)
        line = step.span.line if step.span else None
        before, nodes = captured.num_params(), len(captured.gm.graph.nodes)
        mark, t0 = _fingerprint(captured.gm), time.perf_counter()
        ctx = PassContext(captured, stats)
        try:
            result = p.run(ctx, step)
            captured.gm.graph.lint()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - reported with pass name, history and spec line
            raise PassError(p.name, done, line, e) from e
        changed = _fingerprint(captured.gm) != mark
        if result.modified != changed:
            raise PassError(p.name, done, line, AssertionError(
                f"pass reported modified={result.modified} but the graph "
                f"{'changed' if changed else 'did not change'}"))
        after = captured.num_params()
        report.steps.append(StepReport(
            kind=step.kind, line=line, targets=[lp.path for lp in result.layers],
            params_before=before, params_after=after, params_delta=after - before,
            nodes_delta=len(captured.gm.graph.nodes) - nodes, modified=result.modified,
            seconds=time.perf_counter() - t0, layers=result.layers))
        report.warnings += ctx.warnings
        report.params_after = after
        done.append(p.name)
        if advance:
            advance(f"{p.name} (line {line})" if line else p.name)


def emit(out: Any, captured: Captured, spec: ir.Spec, loaded: LoadedModel,
         report: CompileReport) -> ArtifactReport:
    if isinstance(out, ir.ExportOnnx):
        return export_onnx(captured, out)
    if isinstance(out, ir.Save):
        return save_checkpoint(captured, out, spec.to_text(), loaded.tokenizer)
    if isinstance(out, ir.SaveHF):
        return save_hf(captured, out, loaded)
    if isinstance(out, ir.SaveAdapters):
        return save_adapters(captured, out)
    if isinstance(out, ir.Report):
        return write_report(report, out)
    raise TypeError(f"no emitter for {type(out).__name__}")


def plan_spec(spec: ir.Spec, loaded: LoadedModel | None = None, *,
              trust_code: bool = False) -> dict[str, Any]:
    """Dry run: what each step does, layer by layer; nothing is verified or written.

    The passes run in memory, in order, as compile runs them, so each step is
    planned against the model the steps before it produced (a `fold` sees the
    adapters, a `factorize` after `prune layers` only the blocks that stay).
    """
    loaded = loaded or load_model(spec.model, trust_code)
    _, captured = capture_spec(spec, loaded)
    before = captured.num_params()
    report = CompileReport(spec=spec.to_text(), params_before=before, params_after=before)
    run_passes(captured, spec.steps, report, stats=collect_stats(captured, spec.steps))
    steps = [{
        "kind": step.kind, "line": done.line, "text": step.to_text(), "targets": done.targets,
        "layers": [lp.model_dump() for lp in done.layers], "params_delta": done.params_delta,
        "flops_before": sum(lp.flops_before for lp in done.layers),
        "flops_after": sum(lp.flops_after for lp in done.layers),
    } for step, done in zip(spec.steps, report.steps, strict=True)]
    return {"params_before": before, "params_after": report.params_after, "steps": steps}
