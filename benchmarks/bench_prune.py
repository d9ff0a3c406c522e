"""Layer pruning on MiniLM: remove 1, 2, 3 of 6 layers by each method.

    python benchmarks/bench_prune.py [--rounds N]

Embedding cosine (mean-pooled) against the original on the held-out lines
(never used for calibration) and the onnxruntime latency ratio against the
original, measured side by side in a fresh process (see bench_minilm.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_minilm import BATCH, SEQ, bench

METHODS = ("block_influence", "angular", "last", "first")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2, 3):
            for by in METHODS:
                path = Path(tmp) / f"{by}_{n}.surg"
                path.write_text('model "minilm"\ncalibrate text builtin samples 64 seed 0\n'
                                f'prune layers "encoder.layer" remove {n} by {by}\n')
                rows.append({"removed": n, "by": by, **bench(path, args.rounds, Path(tmp))})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"# MiniLM, 6 layers; 64 calibration lines, 64 held-out; ORT batch {BATCH} x seq {SEQ}, "
          f"{args.rounds} interleaved rounds")
    print("| removed | method | params ratio | embedding cosine | token cosine | ORT speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['removed']} | {r['by']} | {r['params_ratio']} | {r['embedding_cosine']} | "
              f"{r['cosine']} | {r['ort_speedup']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
