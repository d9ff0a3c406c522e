"""Calibration and held-out inputs.

Held-out samples are never used for calibration, so `verify` measures how the
compiled model generalises rather than how well it fits what it was tuned on.
The built-in corpus (surgeon/data/corpus.txt) keeps its last lines as the
held-out set; a user's file is shuffled with the spec's seed and split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from surgeon import ir
from surgeon.diagnostics import UserError

HELDOUT = 64
BATCH = 16
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
                "bool": torch.bool}


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]
    mask: torch.Tensor | None  # which output positions are real tokens (text models)


@dataclass
class CalibrationData:
    input_names: tuple[str, ...]
    calibration: list[Batch]
    heldout: list[Batch]
    example: tuple[torch.Tensor, ...]  # what torch.export traces with
    dims: dict[str, tuple[int, int | None]]  # dynamic dim name -> (min, max)
    dim_names: tuple[tuple[str | None, ...], ...]  # per input, per axis
    seed: int = 0  # the spec's calibrate seed; passes that draw random numbers start from it


def builtin_lines() -> list[str]:
    text = files("surgeon.data").joinpath("corpus.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_texts(cal: ir.Calibrate) -> tuple[list[str], list[str]]:
    """(calibration lines, held-out lines), disjoint and deterministic in the seed."""
    if cal.corpus == "builtin":
        lines = builtin_lines()
        pool, heldout = lines[:-HELDOUT], lines[-HELDOUT:]
    else:
        path = Path(cal.path or "")
        try:
            lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        except OSError as e:
            raise UserError(f"cannot read calibration text {str(path)!r}: {e.strerror}") from None
        if len(lines) < 2:
            raise UserError(f"calibration text {str(path)!r} needs at least 2 non-empty lines")
        random.Random(cal.seed).shuffle(lines)
        n_held = max(1, min(HELDOUT, len(lines) // 5))
        pool, heldout = lines[:-n_held], lines[-n_held:]
    pool = list(pool)
    random.Random(cal.seed).shuffle(pool)
    if cal.samples > len(pool):
        raise UserError(f"calibrate asks for {cal.samples} samples but only {len(pool)} "
                        "lines are left for calibration after holding out the verify set")
    return pool[: cal.samples], heldout


def _tokenize(tokenizer: Any, texts: list[str], seqlen: int) -> Batch:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=seqlen, return_tensors="pt")
    return Batch((enc["input_ids"], enc["attention_mask"]), enc["attention_mask"].bool())


def text_data(tokenizer: Any, cal: ir.Calibrate, max_positions: int | None) -> CalibrationData:
    train, held = split_texts(cal)
    seq_max = min(cal.seqlen, max_positions) if max_positions else cal.seqlen
    chunks = lambda xs: [xs[i : i + BATCH] for i in range(0, len(xs), BATCH)]  # noqa: E731
    example = tokenizer(train[:2] * (2 if len(train) < 2 else 1), padding="max_length",
                        truncation=True, max_length=min(16, seq_max), return_tensors="pt")
    return CalibrationData(
        input_names=("input_ids", "attention_mask"),
        calibration=[_tokenize(tokenizer, c, seq_max) for c in chunks(train)],
        heldout=[_tokenize(tokenizer, c, seq_max) for c in chunks(held)],
        example=(example["input_ids"][:2], example["attention_mask"][:2]),
        dims={"batch": (1, None), "seq": (2, max_positions)},
        dim_names=(("batch", "seq"), ("batch", "seq")),
        seed=cal.seed,
    )


def _random_batch(sigs: tuple[ir.InputSig, ...], batch: int, seqlen: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    out = []
    for sig in sigs:
        shape = [batch if d == "batch" else seqlen if isinstance(d, str) else d for d in sig.shape]
        dtype = TORCH_DTYPES[sig.dtype]
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, 100, shape, generator=gen, dtype=dtype))
    return tuple(out)


def random_data(sigs: tuple[ir.InputSig, ...], cal: ir.Calibrate) -> CalibrationData:
    """Gaussian inputs from a declared signature; named dims other than batch get seqlen."""
    if not sigs:
        raise UserError("this model has no tokenizer, so the spec must declare its inputs",
                        'add a line like: input "x" float32[batch, 16]')
    gen = torch.Generator().manual_seed(cal.seed)
    sizes = [min(BATCH, cal.samples - i) for i in range(0, cal.samples, BATCH)]
    calibration = [Batch(_random_batch(sigs, b, cal.seqlen, gen), None) for b in sizes]
    held_gen = torch.Generator().manual_seed(cal.seed + 1)
    heldout = [Batch(_random_batch(sigs, BATCH, cal.seqlen, held_gen), None)]
    named = {d for s in sigs for d in s.shape if isinstance(d, str)}
    return CalibrationData(
        input_names=tuple(s.name for s in sigs),
        calibration=calibration,
        heldout=heldout,
        example=_random_batch(sigs, 2, min(cal.seqlen, 16), torch.Generator().manual_seed(0)),
        dims={d: (1 if d == "batch" else 2, None) for d in named},
        dim_names=tuple(tuple(d if isinstance(d, str) else None for d in s.shape) for s in sigs),
        seed=cal.seed,
    )


def calibration_data(spec: ir.Spec, tokenizer: Any, max_positions: int | None) -> CalibrationData:
    """Text models calibrate on text; models without a tokenizer on random inputs from
    their declared signature (the built-in corpus is for text models only)."""
    cal = spec.calibrate
    if tokenizer is None and cal.corpus == "file":
        raise UserError(f"calibrate text {cal.path!r} needs a tokenizer, and this model has none",
                        "use 'calibrate random' with declared inputs")
    if cal.corpus == "random" or tokenizer is None:
        return random_data(spec.inputs, cal)
    return text_data(tokenizer, cal, max_positions)
