"""Method catalogues: one registry per family of interchangeable methods.

A family (factorize methods, prune scorers, adapter kinds and inits, verify
metrics; next: rotations, sparsity criteria, kernels) is a `Catalogue` of
`Method` entries: a name, what it computes in one line, the paper it comes
from, the calibration statistics it needs, and its function. Entries are
declared in surgeon/methods/<family>.py without importing torch, so the IR can
validate a method name (with a did-you-mean) and `surgeon methods` can list
the catalogue at once; the function is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator

from surgeon.diagnostics import hint_for


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str  # first author et al.
    year: int
    arxiv: str | None = None  # e.g. "2403.07378"

    def cite(self) -> str:
        where = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{self.authors}, \"{self.title}\" ({self.year}{where})"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # what it computes, one line
    paper: Paper | None
    impl: str  # "module:function", imported on first use
    needs: tuple[str, ...] = ()  # calibration statistics (surgeon/observers.py)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific facts

    @property
    def function(self) -> Callable[..., Any]:
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(module), attr)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "needs": list(self.needs),
                "paper": None if self.paper is None else {
                    "title": self.paper.title, "authors": self.paper.authors,
                    "year": self.paper.year, "arxiv": self.paper.arxiv},
                "function": self.impl, **self.extra}


class Catalogue:
    """Methods of one family by name; registering a name twice is refused."""

    def __init__(self, family: str, what: str):
        self.family = family
        self.what = what  # how errors name a member, e.g. "factorize method"
        self._methods: dict[str, Method] = {}

    def add(self, method: Method) -> Method:
        if method.name in self._methods:
            raise ValueError(f"{self.what} {method.name!r} is already registered")
        self._methods[method.name] = method
        return method

    def names(self) -> tuple[str, ...]:
        return tuple(self._methods)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __getitem__(self, name: str) -> Method:
        return self._methods[name]

    @property
    def name_field(self) -> Any:
        """An IR field type: a method name of this family (checked, with a did-you-mean);
        the catalogue rides in the metadata so the docs can list the members."""
        return Annotated[str, AfterValidator(self.check), self]

    def check(self, name: str) -> str:
        """The name if registered, else a ValueError naming the known ones and the closest."""
        if name in self._methods:
            return name
        hint = hint_for(name, self._methods)
        msg = f"unknown {self.what} {name!r} (known: {', '.join(self._methods)})"
        raise ValueError(msg + (f"; {hint}" if hint else ""))
