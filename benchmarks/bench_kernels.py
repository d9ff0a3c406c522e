"""surgeon's Triton kernels against what a user would run instead, measured side by side
in one process on one GPU (under 3 minutes on an H100):

    python benchmarks/bench_kernels.py [--json]        # a CUDA GPU and Triton
    TRITON_INTERPRET=1 python benchmarks/bench_kernels.py --smoke   # CPU: tiny shapes,
                                                        # checks that every row runs

- sparse_linear (bf16) at 0/25/40/50/75% input sparsity, 4096x4096, 4096x14336 and
  14336x4096 (in x out), 1 and 4 tokens, against cuBLAS's dense x W^T;
- lowrank_linear holding 25% and 50% of the dense parameters at 1 token, against the
  dense GEMV and against the two cuBLAS GEMMs of the same factors; the limit is the
  parameter fraction;
- hadamard at n = 4096, 12288 (12 * 1024), 14336 (28 * 512) over 2048 tokens, against
  a dense bf16 matmul by H_n and as a fraction of device-to-device copy bandwidth;
- one Llama-3-8B-shaped decoder layer (random weights, bf16, one token, a 512-token KV
  cache): dense, 50% sparse (sparse_linear on all seven linears) and 50% low-rank.

Times are medians of triton.testing.do_bench; speed-ups are dense / kernel.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from surgeon.hadamard import hadamard_matrix
from surgeon.kernels.hadamard import hadamard_triton
from surgeon.kernels.lowrank_linear import lowrank_linear_ref, lowrank_linear_triton
from surgeon.kernels.sparse_linear import sparse_linear_ref, sparse_linear_triton

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]
SPARSITIES = [0.0, 0.25, 0.40, 0.50, 0.75]
GAUSS_QUANTILE = {0.0: 0.0, 0.25: 0.3186, 0.40: 0.5244, 0.50: 0.6745, 0.75: 1.1503}


def bench(smoke: bool, fn, *args) -> float:
    """Median microseconds of fn(*args)."""
    if smoke:
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0) * 1e6
    from triton.testing import do_bench

    return do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median") * 1e3


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|, want computed in float64 (the kernels' correctness
    on this device, beside their speed)."""
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


def two_gemms(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.linear(F.linear(x, a), b)


def sparse_rows(dev, dt, smoke: bool) -> list[dict]:
    rows = []
    for k, n in ([(64, 48)] if smoke else SHAPES):
        w = torch.randn(n, k, device=dev, dtype=dt) / math.sqrt(k)
        w_t = w.T.contiguous()
        for tokens in (1, 4):
            x = torch.randn(tokens, k, device=dev, dtype=dt)
            dense = bench(smoke, F.linear, x, w)
            for s in SPARSITIES:
                t = torch.tensor([GAUSS_QUANTILE[s]], device=dev)
                us = bench(smoke, sparse_linear_triton, x, w_t, t)
                err = rel_err(sparse_linear_triton(x, w_t, t),
                              sparse_linear_ref(x.double(), w_t.double(), t))
                rows.append({"kernel": "sparse_linear", "shape": f"{k}x{n}", "tokens": tokens,
                             "sparsity": s, "us": round(us, 1), "cublas_us": round(dense, 1),
                             "speedup": round(dense / us, 3), "err": f"{err:.1e}"})
    return rows


def lowrank_rows(dev, dt, smoke: bool) -> list[dict]:
    rows = []
    for k, n in ([(64, 48)] if smoke else SHAPES):
        w = torch.randn(n, k, device=dev, dtype=dt) / math.sqrt(k)
        x = torch.randn(1, k, device=dev, dtype=dt)
        dense = bench(smoke, F.linear, x, w)
        for share in (0.25, 0.5):
            r = max(1, int(share * k * n / (k + n)))
            a = torch.randn(r, k, device=dev, dtype=dt) / math.sqrt(k)
            b_t = torch.randn(r, n, device=dev, dtype=dt) / math.sqrt(r)
            b = b_t.T.contiguous()
            us = bench(smoke, lowrank_linear_triton, x, a, b_t)
            two = bench(smoke, two_gemms, x, a, b)
            err = rel_err(lowrank_linear_triton(x, a, b_t),
                          lowrank_linear_ref(x.double(), a.double(), b_t.double()))
            rows.append({"kernel": "lowrank_linear", "shape": f"{k}x{n}", "params": share,
                         "rank": r, "us": round(us, 1), "dense_us": round(dense, 1),
                         "two_gemms_us": round(two, 1), "speedup": round(dense / us, 3),
                         "of_limit": round(dense / us * share, 3), "err": f"{err:.1e}"})
    return rows


def hadamard_rows(dev, dt, smoke: bool) -> list[dict]:
    rows = []
    tokens = 8 if smoke else 2048
    for n in ([16 * 12, 64] if smoke else [4096, 12288, 14336]):
        x = torch.randn(tokens, n, device=dev, dtype=dt)
        h = hadamard_matrix(n).T.to(device=dev, dtype=dt)
        copy = bench(smoke, torch.clone, x)
        us = bench(smoke, hadamard_triton, x)
        matmul = bench(smoke, torch.matmul, x, h)
        rows.append({"kernel": "hadamard", "n": n, "tokens": tokens, "us": round(us, 1),
                     "copy_us": round(copy, 1), "of_copy_bandwidth": round(copy / us, 3),
                     "dense_matmul_us": round(matmul, 1), "speedup": round(matmul / us, 3),
                     "err": f"{rel_err(hadamard_triton(x), x.double() @ h.double()):.1e}"})
    return rows


def layer_rows(dev, dt, smoke: bool) -> list[dict]:
    """A Llama-3-8B-shaped decoder layer decoding one token."""
    d, heads, kv, hd, ffn, past = (64, 4, 2, 16, 96, 16) if smoke else \
        (4096, 32, 8, 128, 14336, 512)
    shapes = {"q": (heads * hd, d), "k": (kv * hd, d), "v": (kv * hd, d), "o": (d, heads * hd),
              "gate": (ffn, d), "up": (ffn, d), "down": (d, ffn)}
    w = {name: torch.randn(*s, device=dev, dtype=dt) / math.sqrt(s[1])
         for name, s in shapes.items()}
    cache_k = torch.randn(1, kv, past, hd, device=dev, dtype=dt)
    cache_v = torch.randn(1, kv, past, hd, device=dev, dtype=dt)
    x = torch.randn(1, d, device=dev, dtype=dt)
    t = torch.tensor([GAUSS_QUANTILE[0.5]], device=dev)
    w_t = {name: v.T.contiguous() for name, v in w.items()}
    factors = {}
    for name, v in w.items():
        out, inp = v.shape
        r = max(1, int(0.5 * out * inp / (out + inp)))
        factors[name] = (torch.randn(r, inp, device=dev, dtype=dt) / math.sqrt(inp),
                         torch.randn(r, out, device=dev, dtype=dt) / math.sqrt(r))

    def layer(linear) -> torch.Tensor:
        h = F.rms_norm(x, (d,))
        q = linear("q", h).view(1, heads, 1, hd)
        k = torch.cat([cache_k, linear("k", h).view(1, kv, 1, hd)], 2)
        v = torch.cat([cache_v, linear("v", h).view(1, kv, 1, hd)], 2)
        att = F.scaled_dot_product_attention(q, k, v, enable_gqa=True).reshape(1, heads * hd)
        y = x + linear("o", att)
        h = F.rms_norm(y, (d,))
        return y + linear("down", F.silu(linear("gate", h)) * linear("up", h))

    modes = {"dense": lambda name, h: F.linear(h, w[name]),
             "sparse 50%": lambda name, h: sparse_linear_triton(h, w_t[name], t),
             "low-rank 50%": lambda name, h: lowrank_linear_triton(h, *factors[name])}
    times = {mode: bench(smoke, layer, f) for mode, f in modes.items()}
    return [{"kernel": "llama3_8b_layer", "mode": mode, "us": round(us, 1),
             "speedup": round(times["dense"] / us, 3)} for mode, us in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (interpreter)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dev = "cpu" if args.smoke else "cuda"
    dt = torch.float32 if args.smoke else torch.bfloat16
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or --smoke with TRITON_INTERPRET=1")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    rows = []
    for part in (sparse_rows, lowrank_rows, hadamard_rows, layer_rows):
        rows += part(dev, dt, args.smoke)
    device = "cpu (interpreter)" if args.smoke else torch.cuda.get_device_name()
    if args.json:
        print(json.dumps({"device": device, "rows": rows}, indent=1))
    else:
        print(f"device: {device}")
        for r in rows:
            print(json.dumps(r))
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
