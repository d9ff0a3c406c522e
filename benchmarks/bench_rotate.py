"""Rotations and slicing on the embedded decoder bytellama.

    python benchmarks/bench_rotate.py [--samples 64] [--seqlen 256] [--json]

- exactness: fold norms, then each residual rotation (hadamard, orthogonal, pca), then
  rotate heads and rotate inputs on every down_proj: max |dlogits| / max |logits| on the
  held-out paragraphs, and the mean input kurtosis of the readers of the stream
  (q/k/v/gate/up/lm_head), of o_proj and of down_proj before and after;
- slicing (SliceGPT) 10/20/30% of the stream, next to svd_llm on every block linear at
  the same total parameter count: held-out perplexity increase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from tables import print_tables  # benchmarks/tables.py, beside this script

import surgeon
from surgeon.driver import compile_spec
from surgeon.sources import load_model

LINEARS = "model.layers.*.*.*_proj"


def run(head: str, body: str, loaded):
    t0 = time.perf_counter()
    result = compile_spec(surgeon.parse_spec(head + body), loaded, allow_outside=True)
    return result, time.perf_counter() - t0


def drift(result, loaded) -> float:
    worst = 0.0
    with torch.no_grad():
        for batch in result.captured.data.heldout:
            want = loaded.module(input_ids=batch.inputs[0],
                                 attention_mask=batch.inputs[1]).logits
            got = result.module(*batch.inputs)
            worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    return worst


def kurtosis(step, kind: str, when: str) -> float | None:
    values = [getattr(lp.detail, f"kurtosis_{when}") for lp in step.layers
              if lp.detail is not None and getattr(lp.detail, "kurtosis_after", None)
              is not None and kind in lp.path]
    return round(statistics.mean(values), 2) if values else None


def rotation_rows(head: str, loaded) -> list[dict]:
    rows = []
    for method in ("hadamard", "orthogonal", "pca"):
        body = (f"fold norms\nrotate residual {method}\nrotate heads\n"
                f'rotate inputs "model.layers.*.mlp.down_proj"\n')
        result, seconds = run(head, body, loaded)
        _, rotate, heads, inputs = result.report.steps
        rows.append({
            "rotation": method, "max_rel_dlogits": drift(result, loaded),
            "kl": result.report.fidelity["kl"],
            "q_proj kurtosis": f"{kurtosis(rotate, 'q_proj', 'before')} → "
                               f"{kurtosis(rotate, 'q_proj', 'after')}",
            "gate_proj kurtosis": f"{kurtosis(rotate, 'gate_proj', 'before')} → "
                                  f"{kurtosis(rotate, 'gate_proj', 'after')}",
            "o_proj kurtosis": f"{kurtosis(heads, 'o_proj', 'before')} → "
                               f"{kurtosis(heads, 'o_proj', 'after')}",
            "down_proj kurtosis": f"{kurtosis(inputs, 'down_proj', 'before')} → "
                                  f"{kurtosis(inputs, 'down_proj', 'after')}",
            "seconds": round(seconds, 1)})
    return rows


def slicing_rows(head: str, loaded) -> list[dict]:
    rows = []
    base = sum(p.numel() for p in loaded.module.parameters())
    linear = sum(m.weight.numel() for n, m in loaded.module.named_modules()
                 if n.startswith("model.layers.") and isinstance(m, torch.nn.Linear))
    for share in (10, 20, 30):
        sliced, _ = run(head, f"fold norms\nslice residual {share}%\n", loaded)
        after = sliced.report.params_after
        keep = 100 * (after - (base - linear)) / linear  # svd_llm at the same total
        if not 0 < keep < 100:
            rows.append({"slice": f"{share}%", "params_ratio": round(after / base, 4),
                         "slicegpt_ppl_increase": round(
                             sliced.report.fidelity["perplexity_increase"], 4),
                         "svd_llm_params": "n/a (slicing added parameters)",
                         "svd_llm_ppl_increase": None})
            continue
        svd, _ = run(head, f'factorize "{LINEARS}" params {keep:.2f}% method svd_llm\n', loaded)
        rows.append({"slice": f"{share}%", "params_ratio": round(after / base, 4),
                     "slicegpt_ppl_increase": round(
                         sliced.report.fidelity["perplexity_increase"], 4),
                     "svd_llm_params": f"{keep:.2f}% per block linear "
                                       f"({svd.report.params_after / base:.4f} of all)",
                     "svd_llm_ppl_increase": round(
                         svd.report.fidelity["perplexity_increase"], 4)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--model-dir", type=str, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = f'model hf "{args.model_dir}"' if args.model_dir else 'model "bytellama"'
    head = f"{model}\ncalibrate text builtin samples {args.samples} seqlen {args.seqlen} seed 0\n"
    loaded = load_model(surgeon.parse_spec(head).model)
    out = {"rotations": rotation_rows(head, loaded), "slicing": slicing_rows(head, loaded)}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_tables(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
