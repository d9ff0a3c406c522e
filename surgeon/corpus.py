"""Calibration and held-out inputs.

Held-out samples are never used for calibration, so `verify` measures how the
compiled model generalises rather than how well it fits what it was tuned on.
A built-in corpus keeps a fixed held-out set (the last lines of the sentences in
surgeon/data/corpus.txt; the held-out paragraphs of data/books/, which bytellama
never trained on); a user's file is shuffled with the spec's seed and split.
"""

from __future__ import annotations

import random
import stat
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from surgeon import ir
from surgeon.diagnostics import UserError

HELDOUT = 64
BATCH = 16
MAX_TEXT_BYTES = 64 << 20  # a calibration text file; a few thousand lines is plenty
MAX_TEXT_LINES = 1_000_000
_LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
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


def _lines(name: str) -> list[str]:
    text = files("surgeon.data").joinpath(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def builtin_lines() -> list[str]:
    return _lines("corpus.txt")


def builtin_split(corpus: str) -> tuple[list[str], list[str]]:
    """(calibration pool, held-out lines) of a built-in corpus: `sentences`
    (data/corpus.txt, its last lines held out) or `books` (data/books/: paragraphs of
    public-domain novels, the last 5% of each book held out, as bytellama was trained)."""
    if corpus == "books":
        return _lines("books/train.txt"), _lines("books/heldout.txt")
    lines = builtin_lines()
    return lines[:-HELDOUT], lines[-HELDOUT:]


def split_texts(cal: ir.Calibrate, corpus: str = "sentences") -> tuple[list[str], list[str]]:
    """(calibration lines, held-out lines), disjoint and deterministic in the seed."""
    if cal.corpus == "builtin":
        pool, heldout = builtin_split(corpus)
    else:
        path = Path(cal.path or "")
        lines = [s.strip() for s in read_text_file(path).splitlines() if s.strip()]
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


def read_text_file(path: Path) -> str:
    """A calibration text file, bounded: a regular file (not a device such as /dev/zero,
    nor a pipe) of at most MAX_TEXT_BYTES and MAX_TEXT_LINES lines, in UTF-8."""
    what = f"calibration text {str(path)!r}"
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # before open(): opening a FIFO blocks
            raise UserError(f"{what} is not a regular file",
                            "give a text file with one sample per line")
        with path.open("rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise UserError(f"{what} is larger than {MAX_TEXT_BYTES >> 20} MiB",
                        "calibration needs a few thousand lines at most; cut the file "
                        "(e.g. head -n 100000)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{what} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset "
                        f"{e.start} (line {line})", "save the file as UTF-8") from None
    # the line ends str.splitlines() splits at, a \r\n counted once
    lines = sum(text.count(c) for c in _LINE_ENDS) - text.count("\r\n")
    if lines > MAX_TEXT_LINES:
        raise UserError(f"{what} has {lines} lines, more than {MAX_TEXT_LINES}",
                        "calibration needs a few thousand lines at most; cut the file "
                        "(e.g. head -n 100000)")
    return text


def _tokenize(tokenizer: Any, texts: list[str], seqlen: int) -> Batch:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=seqlen, return_tensors="pt")
    return Batch((enc["input_ids"], enc["attention_mask"]), enc["attention_mask"].bool())


def text_data(tokenizer: Any, cal: ir.Calibrate, max_positions: int | None,
              corpus: str = "sentences") -> CalibrationData:
    train, held = split_texts(cal, corpus)
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


def calibration_data(spec: ir.Spec, tokenizer: Any, max_positions: int | None,
                     corpus: str = "sentences") -> CalibrationData:
    """Text models calibrate on text; models without a tokenizer on random inputs from
    their declared signature (the built-in corpus is for text models only)."""
    cal = spec.calibrate
    if tokenizer is None and cal.corpus == "file":
        raise UserError(f"calibrate text {cal.path!r} needs a tokenizer, and this model has none",
                        "use 'calibrate random' with declared inputs")
    if cal.corpus == "random" or tokenizer is None:
        return random_data(spec.inputs, cal)
    return text_data(tokenizer, cal, max_positions, corpus)
