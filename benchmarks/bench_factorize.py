"""Factorization methods on MiniLM: every encoder linear to 60% of its params.

    python benchmarks/bench_factorize.py [--rounds N] [--samples N]

For svd, asvd, svd_llm, fwsvd at `params 60%` and svd_llm at `budget 60%`:
mean cosine of mean-pooled sentence embeddings against the original on the
held-out lines (never used for calibration), onnxruntime latency ratio against
the original (measured side by side in a fresh process), and compile time,
with svd_llm's compile time relative to plain svd's from the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from bench_minilm import BATCH, SEQ, bench

VARIANTS = [("params 60%", "svd"), ("params 60%", "asvd"), ("params 60%", "svd_llm"),
            ("params 60%", "fwsvd"), ("budget 60%", "svd_llm")]


def spec_text(rank: str, method: str, samples: int) -> str:
    return (f'model "minilm"\ncalibrate text builtin samples {samples} seqlen 128 seed 0\n'
            f'factorize "encoder.layer.**" {rank} method {method}\n')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import surgeon

    surgeon.compile('model "minilm"\n')  # warm-up: first-call costs stay out of compile_s
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rank, method in VARIANTS:
            name = f"{method}_{rank.split()[0]}"
            path = Path(tmp) / f"{name}.surg"
            path.write_text(spec_text(rank, method, args.samples))
            row = bench(path, args.rounds, Path(tmp))
            rows.append({"variant": f"{rank} method {method}", **row})
    by = {r["variant"]: r for r in rows}
    ratio = by["params 60% method svd_llm"]["compile_s"] / by["params 60% method svd"]["compile_s"]
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.json:
        print(json.dumps({"rows": rows, "svd_llm_over_svd_compile": ratio, "peak_rss_mb": peak}))
        return 0
    print(f"# every encoder linear at 60%; {args.samples} calibration lines; held-out: 64 lines; "
          f"ORT batch {BATCH} x seq {SEQ}, {args.rounds} interleaved rounds; peak RSS {peak} MB")
    cols = ["variant", "params_ratio", "embedding_cosine", "cosine", "ort_speedup",
            "compile_s", "ort_max_abs_diff"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"compile time svd_llm / svd: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
