"""Compile time, onnxruntime latency (original vs compiled, measured side by side
in one run), parameters, fidelity and peak memory for MiniLM specs.

    python benchmarks/bench_minilm.py [spec.surg ...]   (default: specs/minilm*.surg)

The original model goes through the same capture and ONNX export with no
passes, so the ratio isolates what the passes changed. Timings interleave the
two sessions round by round so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from transformers import AutoTokenizer

import surgeon
from surgeon import ir
from surgeon.corpus import split_texts
from surgeon.parse import load_spec
from surgeon.sources import embedded_model_dir

REPO = Path(__file__).resolve().parent.parent
BATCH, SEQ = 8, 128


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _latency(sessions: dict[str, ort.InferenceSession], feeds: dict, rounds: int) -> dict:
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _feeds(spec: ir.Spec) -> dict:
    """Held-out sentences (never calibration ones) padded to exactly BATCH x SEQ."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir("minilm"))
    _, held = split_texts(spec.calibrate)
    enc = tokenizer(held[:BATCH], padding="max_length", truncation=True, max_length=SEQ,
                    return_tensors="np")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _latency_in_fresh_process(original: Path, compiled: Path, spec: Path, rounds: int) -> dict:
    """Time in a new process: torch's and the compile's idle thread pools spin in this one."""
    cmd = [sys.executable, __file__, "--latency", str(original), str(compiled), str(spec),
           "--rounds", str(rounds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench(spec_path: Path, rounds: int, workdir: Path) -> dict:
    spec = load_spec(spec_path)
    onnx_out = workdir / f"{spec_path.stem}.onnx"
    compiled_spec = spec.model_copy(update={"outputs": (ir.ExportOnnx(path=str(onnx_out)),)})
    t0 = time.perf_counter()
    result = surgeon.compile(compiled_spec, allow_outside=True)  # into its temp dir
    compile_s = time.perf_counter() - t0
    original_out = workdir / "original.onnx"
    if not original_out.exists():
        baseline = spec.model_copy(update={"steps": (), "checks": (),
                                           "outputs": (ir.ExportOnnx(path=str(original_out)),)})
        surgeon.compile(baseline, allow_outside=True)
    ms = _latency_in_fresh_process(original_out, onnx_out, spec_path, rounds)
    r = result.report
    name = spec_path.relative_to(REPO) if spec_path.is_relative_to(REPO) else spec_path
    return {
        "spec": str(name),
        "compile_s": round(compile_s, 2),
        "params_before": r.params_before, "params_after": r.params_after,
        "params_ratio": round(r.params_after / r.params_before, 4),
        "cosine": round(r.fidelity["cosine"], 4),
        "embedding_cosine": round(r.fidelity["embedding_cosine"], 4),
        "ort_ms_original": round(ms["original"], 2), "ort_ms_compiled": round(ms["compiled"], 2),
        "ort_speedup": round(ms["original"] / ms["compiled"], 3),
        "ort_max_abs_diff": r.artifacts[0].ort_max_abs_diff,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--latency", nargs=3, type=Path, metavar=("ORIGINAL", "COMPILED", "SPEC"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.latency:
        original, compiled, spec = args.latency
        sessions = {"original": _session(original), "compiled": _session(compiled)}
        print(json.dumps(_latency(sessions, _feeds(load_spec(spec)), args.rounds)))
        return 0
    specs = args.specs or sorted((REPO / "specs").glob("minilm*.surg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            rows.append(bench(spec.resolve(), args.rounds, Path(tmp)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env = {"cpus": os.cpu_count(), "onnxruntime": ort.__version__, "batch": BATCH, "seq": SEQ,
           "rounds": args.rounds, "peak_rss_mb": round(peak_mb)}
    if args.json:
        print(json.dumps({"env": env, "results": rows}, indent=2))
        return 0
    print(f"# batch {BATCH} x seq {SEQ}, {args.rounds} interleaved rounds, "
          f"{env['cpus']} CPUs, onnxruntime {env['onnxruntime']}, peak RSS {env['peak_rss_mb']} MB")
    cols = ["spec", "compile_s", "params_ratio", "cosine", "embedding_cosine",
            "ort_ms_original", "ort_ms_compiled", "ort_speedup", "ort_max_abs_diff"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
