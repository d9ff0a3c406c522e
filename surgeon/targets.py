"""Target globs over dotted module paths.

`*` matches within one path segment, `**` (a whole segment) any number of
segments, zero included, and `{a,b}` alternatives, which may contain dots and
globs and nest. Braces are expanded first; each expanded pattern is matched
segment by segment. A target that matches nothing is an error listing the
closest paths.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache, lru_cache

from surgeon.diagnostics import UserError

Segments = tuple[re.Pattern[str] | None, ...]  # None stands for `**`


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in s:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    return [*parts, cur]


def expand(pattern: str) -> list[str]:
    """All brace-free patterns a glob stands for: a.{b,c.d} -> [a.b, a.c.d]."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[end], 0)
        if depth == 0:
            break
    head, tail = pattern[:start], pattern[end + 1 :]
    return [x for alt in _split_top(pattern[start + 1 : end]) for x in expand(head + alt + tail)]


def check_glob(pattern: str) -> None:
    """Raise ValueError if the glob cannot be a module-path pattern."""
    if not pattern.strip():
        raise ValueError("target is empty")
    if any(c.isspace() for c in pattern):
        raise ValueError(f"target {pattern!r} contains whitespace")
    depth = 0
    for c in pattern:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            raise ValueError(f"target {pattern!r} has a '}}' without '{{'")
    if depth:
        raise ValueError(f"target {pattern!r} has an unclosed '{{'")
    if re.search(r"\{,|,,|,\}|\{\}", pattern):
        raise ValueError(f"target {pattern!r} has an empty alternative")
    for plain in expand(pattern):
        segments = plain.split(".")
        if "" in segments:
            raise ValueError(f"target {pattern!r} has an empty path segment")
        if any("**" in s and s != "**" for s in segments):
            raise ValueError(f"target {pattern!r}: '**' must be a whole path segment")


def _segment(seg: str) -> re.Pattern[str] | None:
    if seg == "**":
        return None
    return re.compile("[^.]*".join(re.escape(part) for part in seg.split("*")) + r"\Z")


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> tuple[Segments, ...]:
    check_glob(pattern)
    return tuple(tuple(_segment(s) for s in plain.split(".")) for plain in expand(pattern))


def _match(pat: Segments, path: list[str]) -> bool:
    @cache
    def go(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(path)
        if pat[i] is None:  # `**`: skip it, or let it swallow one more segment
            return go(i + 1, j) or (j < len(path) and go(i, j + 1))
        return j < len(path) and bool(pat[i].match(path[j])) and go(i + 1, j + 1)

    return go(0, 0)


def match(pattern: str, paths: Iterable[str]) -> list[str]:
    compiled = compile_glob(pattern)
    return [p for p in paths if any(_match(c, p.split(".")) for c in compiled)]


def closest(pattern: str, paths: Iterable[str], n: int = 5) -> list[str]:
    """Paths (or their layer-generalised globs) closest to a pattern that matched nothing."""
    paths = list(paths)
    generalised = {re.sub(r"(?<=\.)\d+(?=\.|$)", "*", p) for p in paths}
    pool = sorted(generalised | set(paths))
    return difflib.get_close_matches(pattern, pool, n=n, cutoff=0.4)


def resolve(pattern: str, paths: Iterable[str], what: str = "Linear layer") -> list[str]:
    """Paths matching `pattern`, or a UserError listing the closest ones."""
    paths = list(paths)
    found = match(pattern, paths)
    if found:
        return found
    near = closest(pattern, paths)
    hint = ("did you mean " + " or ".join(repr(p) for p in near[:3]) + "?") if near else None
    msg = f"target {pattern!r} matches no {what} of the model"
    if near:
        msg += "; closest paths:\n    " + "\n    ".join(near)
    raise UserError(msg, hint)
