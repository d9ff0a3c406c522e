"""`report "dir"`: report.json (the --json report without timings, so the same
spec and seed give the same bytes), a bar chart of the block scores of each
`prune layers` step and of the linear inputs' kurtosis before and after each rotation.

report.json is always valid JSON: the report's JSON dump writes NaN and infinite
floats as null (surgeon/report.py), and it is serialised with allow_nan=False so a
bare NaN can never reach the file."""

from __future__ import annotations

import io
import json
import time

from surgeon import atomic, ir
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.json_safe import json_safe
from surgeon.report import ArtifactReport, StepReport

_NO_TIMES = {"seconds": True, "steps": {"__all__": {"seconds"}},
             "artifacts": {"__all__": {"seconds"}}}


def score_chart(step: StepReport, name: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [lp.path.rsplit(".", 1)[-1] for lp in step.layers]
    scores = [lp.detail.score or 0.0 for lp in step.layers]
    colors = ["#d62728" if lp.detail.removed else "#1f77b4" for lp in step.layers]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3.2), dpi=100)
    ax.bar(names, scores, color=colors)
    method = step.layers[0].method if step.layers else ""
    ax.set_title(f"{name}: {method} scores (red: removed)")
    ax.set_xlabel(step.layers[0].path.rsplit(".", 1)[0] if step.layers else "layer")
    ax.set_ylabel("block influence" if method != "angular" else "angular distance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version: stable bytes
    plt.close(fig)
    return buf.getvalue()


def outlier_chart(step: StepReport, name: str) -> bytes:
    """Kurtosis of each rotated linear's input, before and after (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [lp for lp in step.layers if getattr(lp.detail, "kurtosis_after", None) is not None
            and lp.detail.kurtosis_before is not None]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(rows) + 2), 3.4), dpi=100)
    ax.bar([i - 0.2 for i in x], [lp.detail.kurtosis_before for lp in rows], 0.4,
           label="before")
    ax.bar([i + 0.2 for i in x], [lp.detail.kurtosis_after for lp in rows], 0.4, label="after")
    ax.axhline(3.0, color="gray", lw=0.8, ls="--", label="Gaussian (3)")
    ax.set_xticks(list(x), [lp.path.removeprefix("model.") for lp in rows], rotation=90,
                  fontsize=6)
    ax.set(yscale="log", ylabel="input kurtosis", title=f"{name}: {step.kind}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


@register_emitter(ir.Report)
def write_report(ctx: EmitContext, out: ir.Report) -> ArtifactReport:
    t0 = time.perf_counter()
    report = ctx.report
    data = json.dumps(json_safe(report.model_dump(mode="json", exclude=_NO_TIMES)), indent=2,
                      sort_keys=True, allow_nan=False)
    with atomic.staged_dir(ctx.path(out)) as d:
        (d / "report.json").write_text(data + "\n")
        for i, step in enumerate(report.steps, 1):
            name = f"line {step.line}" if step.line else f"step {i}"  # YAML has no lines
            if step.kind == "prune_layers":
                chart = score_chart(step, name)
                (d / f"{name.replace(' ', '')}_prune_layers.png").write_bytes(chart)
            elif step.kind in ("rotate_residual", "rotate_heads"):
                chart = outlier_chart(step, name)
                (d / f"{name.replace(' ', '')}_{step.kind}_kurtosis.png").write_bytes(chart)
        digest, size = atomic.digest(d)
    return ArtifactReport(kind="report", path=out.path, bytes=size, sha256=digest,
                          seconds=time.perf_counter() - t0)
