"""Target globs over dotted module paths.

`*` matches one path segment (or part of one), `**` any number of segments
(zero included), `{a,b}` alternatives (which may contain dots and globs).
A target that matches nothing is an error that lists the closest paths.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import lru_cache

from surgeon.diagnostics import UserError


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
    if ".." in pattern or pattern.startswith(".") or pattern.endswith("."):
        raise ValueError(f"target {pattern!r} has an empty path segment")
    if re.search(r"\{,|,,|,\}|\{\}", pattern):
        raise ValueError(f"target {pattern!r} has an empty alternative")


def _translate(p: str) -> str:
    out, i = [], 0
    while i < len(p):
        if p.startswith("**.", i):
            out.append(r"(?:[^.]+\.)*")
            i += 3
        elif p.startswith(".**", i) and i + 3 == len(p):
            out.append(r"(?:\.[^.]+)*")
            i += 3
        elif p.startswith("**", i):
            out.append(r".*")
            i += 2
        elif p[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif p[i] == "{":
            end, depth = i, 0
            for end in range(i, len(p)):
                depth += {"{": 1, "}": -1}.get(p[end], 0)
                if depth == 0:
                    break
            alts = _split_top(p[i + 1 : end])
            out.append("(?:" + "|".join(_translate(a) for a in alts) + ")")
            i = end + 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    return "".join(out)


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


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    check_glob(pattern)
    return re.compile(_translate(pattern) + r"\Z")


def match(pattern: str, paths: Iterable[str]) -> list[str]:
    rx = compile_glob(pattern)
    return [p for p in paths if rx.match(p)]


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
