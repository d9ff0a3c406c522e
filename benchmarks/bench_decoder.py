"""Every step on the embedded decoder bytellama (8 layers, byte-level, trained on the
public-domain books in surgeon/data/books), judged by held-out perplexity.

    python benchmarks/bench_decoder.py [--samples 64] [--seqlen 256] [--json]

- factorize every linear of the blocks (q/k/v/o, gate/up/down) to 80% and 60% of their
  parameters with svd, asvd, svd_llm and fwsvd, and with `budget` (svd_llm ranks spread
  across depth by truncation loss);
- prune 1, 2, 3 of the 8 layers by block_influence, angular, last, first;
- LoRA and PiSSA adapters (rank 8 on q/v) fine-tuned on the calibration paragraphs:
  next-token loss and held-out perplexity before and after;
- ONNX export of the logits (onnxruntime max |diff| against the compiled graph),
  `save hf` after pruning reloaded by LlamaForCausalLM (max |diff| of logits), and
  adapters loaded by PEFT onto the original base (max |diff| of logits).

Perplexity is surgeon's verify metric: exp of the mean next-token NLL over every byte
of the held-out paragraphs (never calibrated or trained on), each paragraph <s> + at
most `seqlen` - 1 bytes. `--model-dir` runs another local causal LM (`model hf`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from tables import print_tables  # benchmarks/tables.py, beside this script

import surgeon
from surgeon.capture import CausalLM
from surgeon.driver import compile_spec
from surgeon.sources import load_model
from surgeon.verify import fidelity, next_token_nll

LINEARS = "model.layers.*.*.*_proj"  # self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj


def compile_(head: str, body: str, loaded) -> tuple[dict, float, object]:
    t0 = time.perf_counter()
    result = compile_spec(surgeon.parse_spec(head + body), loaded, allow_outside=True)
    return result.report.fidelity, time.perf_counter() - t0, result


def row(what: str, f: dict, seconds: float, result, base_params: int) -> dict:
    return {"step": what, "params_ratio": round(result.report.params_after / base_params, 4),
            "perplexity": round(f["perplexity"], 4),
            "perplexity_increase": round(f["perplexity_increase"], 4),
            "kl": round(f["kl"], 5), "top1": round(f["top1"], 4), "seconds": round(seconds, 1)}


def factorize_rows(head: str, loaded, base: int) -> list[dict]:
    rows = []
    for keep in (80, 60):
        for method in ("svd", "asvd", "svd_llm", "fwsvd"):
            body = f'factorize "{LINEARS}" params {keep}% method {method}\n'
            rows.append(row(f"factorize params {keep}% {method}", *compile_(head, body, loaded),
                            base))
        body = f'factorize "{LINEARS}" budget {keep}% method svd_llm\n'
        rows.append(row(f"factorize budget {keep}% svd_llm", *compile_(head, body, loaded), base))
    return rows


def prune_rows(head: str, loaded, base: int) -> list[dict]:
    rows = []
    for n in (1, 2, 3):
        for by in ("block_influence", "angular", "last", "first"):
            body = f'prune layers "model.layers" remove {n} by {by}\n'
            rows.append(row(f"prune {n} of 8 by {by}", *compile_(head, body, loaded), base))
    return rows


def fine_tune(result, steps: int, lr: float) -> tuple[float, float]:
    """Adam on the adapters, next-token loss on the calibration batches (cycled);
    returns (mean loss of the first pass over them, of the last)."""
    module = result.module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    batches, losses = result.captured.data.calibration, []
    for i in range(steps):
        batch = batches[i % len(batches)]
        loss = next_token_nll(module(*batch.inputs), batch.inputs[0], batch.mask).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    module.eval()
    n = len(batches)
    return sum(losses[:n]) / n, sum(losses[-n:]) / n


def adapter_rows(head: str, loaded, tmp: Path, steps: int) -> list[dict]:
    from peft import PeftModel

    rows = []
    for init in ("gaussian", "pissa"):
        body = f'adapter lora "model.layers.*.self_attn.{{q_proj,v_proj}}" rank 8 alpha 16 ' \
               f'init {init}\n'
        _, _, result = compile_(head, body, loaded)
        t0 = time.perf_counter()
        first, last = fine_tune(result, steps, lr=2e-3)
        after = fidelity(CausalLM(loaded.module).eval(), result.module,
                         result.captured.data.heldout, "logits")
        out = tmp / f"adapters_{init}"
        result.write([surgeon.ir.SaveAdapters(path=str(out))])
        peft_model = PeftModel.from_pretrained(copy.deepcopy(loaded.module), out).eval()
        batch = result.captured.data.heldout[0]
        with torch.no_grad():
            diff = float((peft_model(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
                          .logits - result.module(*batch.inputs)).abs().max())
        rows.append({"adapter": "lora" if init == "gaussian" else "pissa", "steps": steps,
                     "train_loss_first": round(first, 4), "train_loss_last": round(last, 4),
                     "heldout_ppl_before": round(after["perplexity_original"], 4),
                     "heldout_ppl_after": round(after["perplexity"], 4),
                     "peft_max_abs_diff": diff,
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def artifact_rows(head: str, loaded, tmp: Path) -> list[dict]:
    body = (f'prune layers "model.layers" remove 2 by block_influence\n'
            f'export onnx "{tmp}/pruned.onnx"\nsave hf "{tmp}/pruned_hf"\n')
    _, seconds, result = compile_(head, body, loaded)
    onnx, hf = result.report.artifacts
    from transformers import LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(tmp / "pruned_hf").eval()
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        diff = float((reloaded(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
                      - result.module(*batch.inputs)).abs().max())
    return [{"onnx_ort_max_abs_diff": onnx.ort_max_abs_diff, "onnx_mb": round(onnx.bytes / 1e6, 1),
             "hf_class": type(reloaded).__name__, "hf_layers": reloaded.config.num_hidden_layers,
             "hf_reload_max_abs_diff": diff, "seconds": round(seconds, 1)}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--tune-steps", type=int, default=64)
    ap.add_argument("--model-dir", type=str, default=None)
    ap.add_argument("--only", choices=("factorize", "prune", "adapters", "artifacts"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = f'model hf "{args.model_dir}"' if args.model_dir else 'model "bytellama"'
    head = f"{model}\ncalibrate text builtin samples {args.samples} seqlen {args.seqlen} seed 0\n"
    loaded = load_model(surgeon.parse_spec(head).model)
    base = sum(p.numel() for p in loaded.module.parameters())
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("factorize", lambda: factorize_rows(head, loaded, base)),
                         ("prune", lambda: prune_rows(head, loaded, base)),
                         ("adapters", lambda: adapter_rows(head, loaded, Path(tmp),
                                                           args.tune_steps)),
                         ("artifacts", lambda: artifact_rows(head, loaded, Path(tmp)))):
            if args.only in (None, name):
                out[name] = fn()
                print(f"{name} done", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_tables(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
