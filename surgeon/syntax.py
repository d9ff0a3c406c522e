"""How an IR field is written in spec text: markers in a field's `Annotated[...]`.

The grammar (grammar/surgery.lark) fixes the shape of each statement; these
markers say which field each value token fills, so the parser builds every IR
node generically (surgeon/parse.py) and `Node.to_text()` prints it back:

- `Arg()`     a positional value, in field order: `save "path"`;
- `Option()`  a value after a keyword (the field name unless given):
              `method svd_llm`, `remove 2`;
- `Choice()`  a Literal field written as one of its own values: `model hf ...`,
              `prune layers ... keep 4`.

A field holding another node (factorize's `rank 8` / `params 50%`) needs no
marker: the sub-node's type says which field takes it. Torch-free on purpose:
`surgeon check` must start at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arg:
    """A positional value; `quoted` prints it as a string ("..."), else bare."""

    quoted: bool = True
    suffix: str = ""  # printed right after the value, e.g. "%"
    hundredths: bool = False  # may be written as a percentage: `5%` is 0.05


@dataclass(frozen=True)
class Option:
    """`keyword value`; several keywords may introduce the same field."""

    keywords: tuple[str, ...] = ()
    quoted: bool = False  # the value is a string ("...") rather than a bare name
    omit_default: bool = False  # canonical text leaves the option out at its default


@dataclass(frozen=True)
class Choice:
    """A Literal field whose value is written as a keyword of its own."""


Marker = Arg | Option | Choice


def marker(metadata: list[Any]) -> Marker | None:
    found = [m for m in metadata if isinstance(m, Arg | Option | Choice)]
    return found[0] if found else None
