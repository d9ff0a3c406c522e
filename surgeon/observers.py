"""Observers: the calibration statistics a pass can ask for, by name.

An observer watches one kind of site while the calibration data runs through
the graph and folds what it sees into an accumulator, without storing
activations (a Gram is O(in^2) per layer, whatever the data size):

- on "input":         a linear layer's input x, as (real tokens, features) float64;
- on "heldout_input": the same on the held-out batches (for reported errors);
- on "weight_grad":   the gradient of a linear's weight (FWSVD's Fisher);
- on "blocks":        hidden states at the boundaries of a layer list.

A new statistic is one `OBSERVERS.add(...)` here: surgeon/calibration.py runs
every observer requested of a site in the same pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Site = Literal["input", "heldout_input", "weight_grad", "blocks"]


def _same(total: torch.Tensor, tokens: int) -> torch.Tensor:
    return total


def _per_token(total: torch.Tensor, tokens: int) -> torch.Tensor:
    return total / max(tokens, 1)


def _zeros_and_entries(x: torch.Tensor) -> torch.Tensor:
    return x.new_tensor([float((x == 0).sum()), float(x.numel())], dtype=x.dtype)


@dataclass(frozen=True)
class Observer:
    name: str
    summary: str
    site: Site
    # (what it saw, as the site hands it over) -> this batch's contribution; summed
    update: Callable[[torch.Tensor], torch.Tensor] | None
    finish: Callable[[torch.Tensor, int], torch.Tensor] = _same  # (sum, tokens) -> value
    # "sum": contributions add up; "rows": they are stacked, up to ROWS_CAP rows in all
    reduce: Literal["sum", "rows"] = "sum"


# A sample of a linear's input rows: every ROW_STRIDE-th real token, at most ROWS_CAP of
# them (the first ones in calibration order, so the same data gives the same sample).
# Quantiles and output errors of activation sparsity need values, not moments.
ROW_STRIDE, ROWS_CAP = 4, 8192


class Observers:
    def __init__(self) -> None:
        self._by_name: dict[str, Observer] = {}

    def add(self, observer: Observer) -> None:
        if observer.name in self._by_name:
            raise ValueError(f"observer {observer.name!r} is already registered")
        self._by_name[observer.name] = observer

    def __getitem__(self, name: str) -> Observer:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"unknown statistic {name!r} "
                             f"(known: {', '.join(self._by_name)})") from None

    def __iter__(self) -> Iterator[Observer]:
        return iter(self._by_name.values())

    def on(self, site: Site) -> list[Observer]:
        return [o for o in self._by_name.values() if o.site == site]


OBSERVERS = Observers()
OBSERVERS.add(Observer("gram", "sum of x x^T over real tokens (SVD-LLM's whitening, EVA)",
                       "input", lambda x: x.T @ x))
OBSERVERS.add(Observer("abs_mean", "mean |x| per input channel (ASVD's scaling)", "input",
                       lambda x: x.abs().sum(0), _per_token))
OBSERVERS.add(Observer("mean", "mean x per input channel (centres the Gram: EVA)", "input",
                       lambda x: x.sum(0), _per_token))
OBSERVERS.add(Observer("heldout_gram", "the Gram on held-out batches (reported output error)",
                       "heldout_input", lambda x: x.T @ x))
OBSERVERS.add(Observer("fisher_rows", "per output row, summed squared weight gradients "
                       "(FWSVD)", "weight_grad", lambda g: g.double().pow(2).sum(1)))
OBSERVERS.add(Observer("blocks", "token-mean cosine and angular distance between hidden "
                       "states at every pair of block boundaries (ShortGPT, Gromov et al.)",
                       "blocks", None))
OBSERVERS.add(Observer("input_rows", f"every {ROW_STRIDE}th real token's input row, at most "
                       f"{ROWS_CAP} (float32): activation sparsity's quantiles and errors",
                       "input", lambda x: x[::ROW_STRIDE].float(), reduce="rows"))
OBSERVERS.add(Observer("zero_share", "share of exactly-zero input entries on held-out tokens "
                       "(the sparsity a masked linear achieves)", "heldout_input",
                       _zeros_and_entries, lambda total, tokens: total[0] / total[1].clamp_min(1)))
OBSERVERS.add(Observer("kurtosis", "mean over tokens of mean(x^4) / mean(x^2)^2 (3 for a "
                       "Gaussian; large when a few channels carry outliers: why rotate)",
                       "input", lambda x: (x.pow(4).mean(1) / x.pow(2).mean(1).pow(2)
                                           .clamp_min(1e-300)).sum().reshape(1), _per_token))
OBSERVERS.add(Observer("peak_ratio", "mean over tokens of max |x| / rms(x) (QuaRot's outlier "
                       "measure)", "input",
                       lambda x: (x.abs().amax(1) / x.pow(2).mean(1).sqrt().clamp_min(1e-300))
                       .sum().reshape(1), _per_token))
