"""Train the embedded decoder `bytellama`: a byte-level LlamaForCausalLM (pre-RMSNorm, RoPE,
SwiGLU, untied embeddings; hidden 256, 4 heads of 64, 8 layers, FFN 768) on the public-domain
books in surgeon/data/books/ (see LICENSE.txt there), with a fixed seed, data and schedule.

    python benchmarks/train_bytellama.py [--steps 2400] [--out surgeon/data/bytellama]

Writes the model directory (config.json, model.safetensors, tokenizer files; exactly what
`LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load), the loss curve
docs/img/bytellama_loss.png and the training figures training.json beside the weights.
Held-out perplexity is per byte on held-out paragraphs, each tokenised as surgeon tokenises a
calibration line (<s> + bytes, at most 256 tokens), the first byte predicted from <s>.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BOOKS = ROOT / "surgeon" / "data" / "books"
SEQ = 256
SPECIALS = ("<s>", "</s>", "<pad>")  # ids 256, 257, 258 after the 256 bytes


def byte_tokenizer():
    """A fast tokenizer with one token per byte (GPT-2's byte-to-unicode alphabet, no
    merges), <s> prepended; loadable by AutoTokenizer without custom code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = {b: c for b, c in zip(range(256), _bytes_to_unicode(), strict=True)}
    assert set(byte_chars.values()) == set(alphabet)
    vocab = {byte_chars[b]: b for b in range(256)}
    vocab.update({s: 256 + i for i, s in enumerate(SPECIALS)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 256)])
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=SEQ,
                                   padding_side="right")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character map, in byte order."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=256 + len(SPECIALS), hidden_size=256, intermediate_size=768,
                       num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=4,
                       head_dim=64, max_position_embeddings=SEQ, rms_norm_eps=1e-5,
                       rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
                       bos_token_id=256, eos_token_id=257, pad_token_id=258,
                       attention_bias=False, mlp_bias=False, use_cache=False,
                       architectures=["LlamaForCausalLM"])


def stream(paragraphs: list[str]) -> torch.Tensor:
    """<s> paragraph </s> ... as one long sequence of token ids."""
    ids: list[int] = []
    for p in paragraphs:
        ids += [256, *p.encode("utf-8"), 257]
    return torch.tensor(ids, dtype=torch.long)


def lines(name: str) -> list[str]:
    return [s for s in (BOOKS / name).read_text(encoding="utf-8").splitlines() if s.strip()]


@torch.no_grad()
def paragraph_perplexity(model, tokenizer, paragraphs: list[str]) -> float:
    """exp(mean NLL per predicted byte) over paragraphs tokenised one by one."""
    nll, count = 0.0, 0
    for i in range(0, len(paragraphs), 32):
        enc = tokenizer(paragraphs[i:i + 32], padding=True, truncation=True, max_length=SEQ,
                        return_tensors="pt")
        logits = model(**enc).logits[:, :-1].float()
        target, mask = enc["input_ids"][:, 1:], enc["attention_mask"][:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target,
                                                   reduction="none")
        nll += float(losses[mask].sum())
        count += int(mask.sum())
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "surgeon" / "data" / "bytellama")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "bytellama_loss.png")
    args = ap.parse_args()
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = byte_tokenizer()
    model = LlamaForCausalLM(config()).train()
    train_text, held_text = lines("train.txt"), lines("heldout.txt")
    data = stream(train_text)
    probe = rng.sample(train_text, 300)  # a fixed train sample, measured like the held-out set
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (  # noqa: E731
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)) * 0.95 + 0.05
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    history: list[dict] = []
    t0 = time.time()
    for step in range(args.steps):
        starts = [rng.randrange(len(data) - SEQ - 1) for _ in range(args.batch)]
        window = torch.stack([data[s:s + SEQ + 1] for s in starts])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        entry = {"step": step + 1, "loss": float(loss), "seconds": round(time.time() - t0, 1)}
        if (step + 1) % max(1, args.steps // 12) == 0 or step + 1 == args.steps:
            model.eval()
            entry["heldout_ppl"] = paragraph_perplexity(model, tokenizer, held_text)
            entry["train_ppl"] = paragraph_perplexity(model, tokenizer, probe)
            model.train()
        history.append(entry)
        if "heldout_ppl" in entry or step % 50 == 0:
            print(json.dumps(entry), flush=True)
    model.eval()
    save(model, tokenizer, args, history)


def save(model, tokenizer, args, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    last = history[-1]
    figures = {"steps": args.steps, "batch": args.batch, "seq": SEQ, "lr": args.lr,
               "seed": args.seed, "threads": args.threads, "seconds": last["seconds"],
               "tokens_seen": args.steps * args.batch * SEQ,
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_ppl": last["train_ppl"], "heldout_ppl": last["heldout_ppl"],
               "evals": [h for h in history if "heldout_ppl" in h]}
    (args.out / "training.json").write_text(json.dumps(figures, indent=1) + "\n")
    steps = [h["step"] for h in history]
    smooth = [sum(h["loss"] for h in history[max(0, i - 24):i + 1]) / min(i + 1, 25)
              for i in range(len(history))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [math.exp(s) for s in smooth], label="train windows (25-step mean)")
    evals = figures["evals"]
    ax.plot([e["step"] for e in evals], [e["heldout_ppl"] for e in evals], "o-",
            label="held-out paragraphs")
    ax.set(xlabel="step", ylabel="byte perplexity", yscale="log",
           title="bytellama training")
    ax.legend()
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=100, metadata={"Software": None})
    print(json.dumps({k: v for k, v in figures.items() if k != "evals"}))


if __name__ == "__main__":
    main()
