"""Short fine-tune of MiniLM with adapters: LoRA vs PiSSA vs EVA vs DoRA.

    python benchmarks/bench_adapters.py [--steps N] [--lr LR] [--out DIR]

Task: pull the mean-pooled embeddings of paraphrase pairs together
(surgeon/data/paraphrases.tsv) with an in-batch contrastive loss (each
sentence must pick its own paraphrase among the batch's, cosine x 5, cross
entropy). The same adapters (q, k, v of every layer, rank 8), steps, batches,
learning rate and seed for every variant (EVA with rho 2 keeps the total rank
and moves it between layers); the last 64 pairs are held out. Writes
the loss curves to DIR/adapter_loss.png and prints final losses.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from importlib.resources import files
from pathlib import Path

import torch

import surgeon
from surgeon.verify import mean_pool

# label -> (method, init and options) of the adapter statement
VARIANTS = {"lora": ("lora", "init zero"), "pissa": ("lora", "init pissa"),
            "eva": ("lora", "init eva"), "eva rho 2": ("lora", "init eva rho 2"),
            "dora": ("dora", "init zero")}
HELD = 64
# logit scale: at 20 (sentence-transformers' default) MiniLM, trained on paraphrases,
# starts near zero loss and there is nothing to learn; 5 leaves headroom
SCALE = 5.0


def pairs() -> list[tuple[str, str]]:
    text = files("surgeon.data").joinpath("paraphrases.tsv").read_text(encoding="utf-8")
    return [tuple(line.split("\t")) for line in text.splitlines() if line.strip()]


def contrastive(module, tokenizer, batch: list[tuple[str, str]]) -> torch.Tensor:
    embs = []
    for side in (0, 1):
        enc = tokenizer([p[side] for p in batch], padding=True, truncation=True,
                        max_length=64, return_tensors="pt")
        out = module(enc["input_ids"], enc["attention_mask"])
        embs.append(torch.nn.functional.normalize(mean_pool(out, enc["attention_mask"]), dim=-1))
    logits = embs[0] @ embs[1].T * SCALE
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))


def finetune(label: str, data, tokenizer, steps: int, lr: float, batch: int) -> dict:
    method, options = VARIANTS[label]
    spec = ('model "minilm"\ncalibrate text builtin samples 64 seed 0\n'
            f'adapter {method} "encoder.layer.*.attention.self.{{query,key,value}}" '
            f'rank 8 alpha 8 dropout 0 {options}\n')
    result = surgeon.compile(spec)
    module = result.module
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    train, held = data[:-HELD], data[-HELD:]
    rng = random.Random(0)
    torch.manual_seed(0)
    curve = []
    module.train()
    for _ in range(steps):
        loss = contrastive(module, tokenizer, rng.sample(train, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    module.eval()
    with torch.no_grad():
        held_loss = float(contrastive(module, tokenizer, held))
        start = surgeon.compile(spec).module
        held_start = float(contrastive(start, tokenizer, held))
    return {"variant": label, "trainable": sum(p.numel() for p in params), "curve": curve,
            "final_train": sum(curve[-10:]) / 10, "held_before": held_start,
            "held_after": held_loss}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for r in rows:
        ax.plot(r["curve"], label=r["variant"])
    ax.set_xlabel("step")
    ax.set_ylabel("in-batch contrastive loss")
    ax.set_title("MiniLM adapters (q,k,v rank 8): same steps, lr, batches")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("out/bench_adapters"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from surgeon.sources import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir("minilm"))
    data = pairs()
    rows = [finetune(v, data, tokenizer, args.steps, args.lr, args.batch) for v in VARIANTS]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "adapter_loss.png")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "curve"} for r in rows]))
        return 0
    print(f"# {args.steps} steps, batch {args.batch}, lr {args.lr}, AdamW; held-out: {HELD} pairs")
    print("| adapter | trainable params | train loss (first 10 steps) | "
          "train loss (last 10 steps) | held-out loss before | held-out loss after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['trainable']:,} | {sum(r['curve'][:10]) / 10:.4f} | "
              f"{r['final_train']:.4f} | {r['held_before']:.4f} | {r['held_after']:.4f} |")
    print(f"curves: {args.out / 'adapter_loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
