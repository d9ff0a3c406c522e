"""The method catalogues, one module per family; importing this package registers
every entry (explicitly, below). `surgeon methods` prints them with citations."""

from __future__ import annotations

from surgeon.catalogue import Catalogue
from surgeon.methods import adapter, factorize, prune, rotate, sparsify, verify

FAMILIES: dict[str, Catalogue] = {c.family: c for c in (
    factorize.METHODS, prune.SCORERS, adapter.KINDS, adapter.INITS, rotate.ROTATIONS,
    sparsify.CRITERIA, verify.METRICS)}
