"""The compiler driver: spec -> model -> graph -> passes -> verify -> artifacts.

`plan` and `compile` run the same code: the passes in order, each on the graph
the steps before it produced, with calibration statistics taken on that graph.
Artifacts are written only after `verify` passes, so a failed compile leaves
no output behind.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

import surgeon.emit  # noqa: F401 - registers the emitters
import surgeon.passes  # noqa: F401 - registers the passes
from surgeon import atomic, finite, ir
from surgeon.calibration import CalibrationStats
from surgeon.capture import Captured, capture, entry_point
from surgeon.corpus import calibration_data
from surgeon.diagnostics import PassError, UserError
from surgeon.emit.registry import EmitContext, emitter_for
from surgeon.methods.verify import METRICS
from surgeon.outputs import anchored, destinations
from surgeon.progress import Progress, bar
from surgeon.registry import PassContext, pass_for
from surgeon.report import ArtifactReport, CompileReport, StepReport
from surgeon.sources import LoadedModel, load_model
from surgeon.verify import applicable, check, fidelity


@dataclass
class CompileResult:
    module: fx.GraphModule
    report: CompileReport
    captured: Captured
    spec: ir.Spec | None = None
    loaded: LoadedModel | None = None

    def apply(self, steps: Any) -> CompileResult:
        """More IR steps on the compiled graph (e.g. `fold` after fine-tuning adapters)."""
        run_passes(self.captured, tuple(steps), self.report)
        return self

    def write(self, outputs: Any, *, allow_outside: bool = True) -> list[ArtifactReport]:
        """Write artifacts (ExportOnnx, Save, SaveHF, SaveAdapters, Report) of the graph now.
        Relative paths are relative to the spec's directory (the working directory for
        spec text); anywhere may be written unless allow_outside=False, but never over
        data surgeon did not write."""
        outputs = tuple(outputs)
        spec = self.spec or ir.Spec(model=ir.ModelSource(source="python", ref="api:model"))
        found = destinations(spec, allow_outside=allow_outside, outputs=outputs)
        ctx = EmitContext(self.captured, spec, self.loaded, self.report,
                          {d.output: d.path for d in found})
        with _disk_errors(), atomic.transaction():  # all outputs land, or none
            written = [emitter_for(o).write(ctx, o) for o in outputs]
        self.report.artifacts += written
        return written


def compile_spec(spec: ir.Spec, loaded: LoadedModel | None = None, *, trust_code: bool = False,
                 progress: bool = False, allow_outside: bool = False) -> CompileResult:
    t0 = time.perf_counter()
    check_outputs(spec)
    paths = {d.output: d.path for d in destinations(spec, allow_outside=allow_outside)}
    source = anchored(spec)  # reads relative to the spec; the report keeps the spec as written
    loaded = loaded or load_model(source.model, trust_code)
    reference, captured = capture_spec(source, loaded)
    with bar(2 + len(spec.steps) + len(spec.outputs), progress) as advance:
        report = CompileReport(spec=spec.to_text(), params_before=captured.num_params(),
                               params_after=captured.num_params())
        run_passes(captured, source.steps, report, advance)
        advance("verify on held-out inputs")
        report.fidelity = fidelity(reference, captured.gm, captured.data.heldout,
                                   captured.output_name)
        report.verify = check(spec.checks, report.fidelity)
        ctx = EmitContext(captured, spec, loaded, report, paths)
        with _disk_errors(), atomic.transaction():  # all outputs land, or none
            for out in spec.outputs:
                advance(f"write {out.path}")
                report.artifacts.append(emitter_for(out).write(ctx, out))
        advance("done")
    report.seconds["total"] = time.perf_counter() - t0
    return CompileResult(captured.gm, report, captured, spec, loaded)


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR}


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A full, read-only or forbidding disk is the user's to fix (exit 2), not a bug;
    the transaction has already put everything back when this sees it."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        raise UserError(f"cannot write the outputs: {e.strerror or e}{where}; nothing was "
                        "written") from None


def check_outputs(spec: ir.Spec) -> None:
    """What the passes declare they do, against what each output needs; before any work."""
    changed: ir.Step | None = None  # the last step that left the architecture changed
    adapters: ir.Step | None = None  # the step whose adapters are still open
    for step in spec.steps:
        p = pass_for(step)
        if p.adapters == "add":
            adapters = step
        elif p.adapters == "fold":
            adapters = None
        elif not p.preserves_architecture:
            changed = step
    for out in spec.outputs:
        needs = emitter_for(out)
        what = out.keyword
        if needs.dtypes is not None and spec.model.dtype not in needs.dtypes:
            raise UserError(f"{what} cannot write a {spec.model.dtype} model (it writes "
                            f"{', '.join(needs.dtypes)})",
                            "compile with another 'model ... dtype', or use save")
        if needs.needs_architecture and changed is not None:
            raise UserError(f"{what} needs architecture-preserving steps; {changed.keyword} "
                            "changes the architecture",
                            "use save or export onnx for such models")
        if needs.needs_architecture and adapters is not None:
            raise UserError(f"{what} cannot hold unfolded adapters",
                            "add 'fold' before the outputs")
        if needs.needs_adapters and adapters is None:
            raise UserError(f"{what}: the compiled model has no adapters (is there an "
                            "'adapter' step, and no 'fold' after it?)")


def capture_spec(spec: ir.Spec, loaded: LoadedModel) -> tuple[nn.Module, Captured]:
    """(the eager reference entry point, its captured graph) for a spec's model."""
    data = calibration_data(spec, loaded.tokenizer, loaded.max_positions, loaded.corpus)
    text = data.input_names == ("input_ids", "attention_mask") and loaded.tokenizer is not None
    entry, prefix, output_name = entry_point(loaded.module, text, loaded.causal_lm)
    for c in spec.checks:
        if not applicable(c.metric, output_name):
            at = f" (spec line {c.span.line})" if c.span else ""
            raise UserError(f"verify {c.metric}{at} measures a causal language model's "
                            f"next-token logits; this model's output is {output_name}",
                            "use " + " or ".join(m.name for m in METRICS
                                                 if applicable(m.name, output_name)))
    return entry, capture(entry, data, prefix, output_name)


def _fingerprint(gm: fx.GraphModule) -> tuple[str, tuple[tuple[str, int], ...]]:
    return str(gm.graph), tuple((n, id(p)) for n, p in gm.named_parameters())


def statistics_for(captured: Captured, steps: Sequence[Any], advance: Progress | None = None,
                   stats: CalibrationStats | None = None) -> tuple[CalibrationStats, int]:
    """Statistics for steps[0] and the steps after it that see the same graph (up to the
    first that may invalidate statistics), collected in one pass over the calibration
    data; added to `stats` when the graph is still the one it describes. Returns them and
    how many of the steps they serve."""
    stats = stats or CalibrationStats(captured)
    ctx = PassContext(captured, stats)
    served = 0
    for step in steps:
        p = pass_for(step)
        p.requires(ctx, step)
        served += 1
        if p.invalidates_statistics:
            break
    if stats.pending():
        batches = len(captured.data.calibration)
        if advance:
            advance.extend(batches)
        line = steps[0].span.line if steps[0].span else None
        what = f"statistics (line {line})" if line else "statistics"
        stats.collect((lambda: advance(what)) if advance else None)
    return stats, served


def run_passes(captured: Captured, steps: tuple[Any, ...], report: CompileReport,
               advance: Progress | None = None) -> None:
    """Run each step's pass, lint the graph after it, and record what changed."""
    done: list[str] = []
    stats: CalibrationStats | None = None
    served = 0  # steps[:served] have had their statistics requested of `stats`
    finite.check_weights(captured.gm, "the model")  # NaN/Inf in: the user's (exit 2)
    for i, step in enumerate(steps):
        p = pass_for(step)
        line = step.span.line if step.span else None
        t0 = time.perf_counter()
        if stats is None or i >= served:  # fresh, or the graph survived an invalidating step
            stats, n = statistics_for(captured, steps[i:], advance, stats)
            served = i + n
            finite.check_statistics(stats)  # the user's model overflowed on the data (exit 2)
            report.seconds["calibration"] = report.seconds.get("calibration", 0.0) + \
                time.perf_counter() - t0
        before, nodes = captured.num_params(), len(captured.gm.graph.nodes)
        mark, t0 = _fingerprint(captured.gm), time.perf_counter()
        ctx = PassContext(captured, stats)
        try:
            result = p.run(ctx, step)
            captured.gm.graph.lint()
            finite.check_after_pass(captured.gm)  # NaN/Inf out: the pass's (PassError)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - reported with pass name, history and spec line
            raise PassError(p.name, done, line, e) from e
        changed = _fingerprint(captured.gm) != mark
        if result.modified != changed:
            raise PassError(p.name, done, line, AssertionError(
                f"pass reported modified={result.modified} but the graph "
                f"{'changed' if changed else 'did not change'}"))
        if changed and p.invalidates_statistics:
            stats = None  # later steps see other inputs: take their statistics afresh
        after = captured.num_params()
        report.steps.append(StepReport(
            kind=step.kind, line=line, targets=[lp.path for lp in result.layers],
            params_before=before, params_after=after, params_delta=after - before,
            nodes_delta=len(captured.gm.graph.nodes) - nodes, modified=result.modified,
            seconds=time.perf_counter() - t0, layers=result.layers, summary=result.summary))
        report.warnings += ctx.warnings
        report.params_after = after
        done.append(p.name)
        if advance:
            advance(f"{p.name} (line {line})" if line else p.name)


def plan_spec(spec: ir.Spec, loaded: LoadedModel | None = None, *,
              trust_code: bool = False) -> dict[str, Any]:
    """Dry run: what each step does, layer by layer; nothing is verified or written.

    The passes run in memory, in order, exactly as compile runs them (run_passes),
    so each step is planned against the model the steps before it produced.
    """
    check_outputs(spec)
    source = anchored(spec)
    loaded = loaded or load_model(source.model, trust_code)
    _, captured = capture_spec(source, loaded)
    before = captured.num_params()
    report = CompileReport(spec=spec.to_text(), params_before=before, params_after=before)
    run_passes(captured, source.steps, report)
    steps = [{
        "kind": step.kind, "line": done.line, "text": step.to_text(), "targets": done.targets,
        "layers": [lp.model_dump() for lp in done.layers], "params_delta": done.params_delta,
        "flops_before": sum(lp.flops_before for lp in done.layers),
        "flops_after": sum(lp.flops_after for lp in done.layers),
    } for step, done in zip(spec.steps, report.steps, strict=True)]
    return {"params_before": before, "params_after": report.params_after, "steps": steps}
