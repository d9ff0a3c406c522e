"""Activation sparsity on the embedded models: every criterion at 25/40/50%, uniform and
greedy, judged by MiniLM's embedding cosine on held-out lines and bytellama's held-out
perplexity increase (and KL), with the achieved sparsity measured on held-out tokens.

    python benchmarks/bench_sparsify.py [--models minilm,bytellama] [--percents 25,40,50]

Two target sets per model: every linear of the blocks (teal, wina, rsparse, larosa), and
the MLP's down projection alone (teal, wina, cats: CATS only sparsifies there). bytellama
runs `fold norms` first for every row (exact; LaRoSA needs it), MiniLM is post-norm so
LaRoSA is refused there. R-Sparse keeps a rank-8 copy of each weight (its extra
parameters are in the params column).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import surgeon
from surgeon.driver import compile_spec
from surgeon.sources import load_model

MODELS = {
    "bytellama": {
        "head": 'model "bytellama"\ncalibrate text builtin samples {samples} seqlen 256\n'
                "fold norms\n",
        "all": "model.layers.*.*.*_proj", "down": "model.layers.*.mlp.down_proj",
        "methods": ("teal", "wina", "rsparse rank 8", "larosa"),
        "metric": "perplexity_increase"},
    "minilm": {
        "head": 'model "minilm"\ncalibrate text builtin samples {samples} seqlen 128\n',
        "all": "encoder.layer.*.**", "down": "encoder.layer.*.output.dense",
        "methods": ("teal", "wina", "rsparse rank 8"),
        "metric": "embedding_cosine"},
}
DOWN_METHODS = ("teal", "wina", "cats")


def run(model: str, percents: list[int], samples: int) -> list[dict]:
    cfg = MODELS[model]
    head = cfg["head"].format(samples=samples)
    loaded = load_model(surgeon.parse_spec(head).model)
    rows = []
    for targets, methods in (("all", cfg["methods"]), ("down", DOWN_METHODS)):
        for method in methods:
            for allocate in ("uniform", "greedy"):
                for p in percents:
                    line = f'sparsify "{cfg[targets]}" {p}% by {method} allocate {allocate}\n'
                    t0 = time.perf_counter()
                    result = compile_spec(surgeon.parse_spec(head + line), loaded,
                                          allow_outside=True)
                    f, step = result.report.fidelity, result.report.steps[-1]
                    rows.append({
                        "model": model, "targets": targets, "method": method.split()[0],
                        "allocate": allocate, "target": p,
                        "achieved": round(100 * step.summary["achieved_sparsity"], 2),
                        cfg["metric"]: round(f[cfg["metric"]], 5),
                        "kl": round(f["kl"], 5) if "kl" in f else None,
                        "params_ratio": round(result.report.params_after
                                              / result.report.params_before, 4),
                        "seconds": round(time.perf_counter() - t0, 1)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], metric: str, percents: list[int]) -> str:
    head = "| targets | method | allocate | " + " | ".join(f"{p}%" for p in percents) + " |"
    out = [head, "|" + "---|" * (3 + len(percents))]
    keys = dict.fromkeys((r["targets"], r["method"], r["allocate"]) for r in rows)
    for key in keys:
        cells = {r["target"]: r for r in rows if (r["targets"], r["method"], r["allocate"]) == key}
        fmt = "{:+.2%}" if metric == "perplexity_increase" else "{:.4f}"
        out.append("| " + " | ".join(key) + " | " + " | ".join(
            f"{fmt.format(cells[p][metric])} ({cells[p]['achieved']:.1f}%)" for p in percents)
            + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,bytellama")
    ap.add_argument("--percents", default="25,40,50")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    percents = [int(p) for p in args.percents.split(",")]
    t0 = time.perf_counter()
    results = {m: run(m, percents, args.samples) for m in args.models.split(",")}
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for m, rows in results.items():
        metric = MODELS[m]["metric"]
        print(f"\n{m}: {metric} (achieved sparsity on held-out tokens)\n")
        print(table(rows, metric, percents))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
