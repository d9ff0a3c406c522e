"""Target globs over dotted module paths.

`*` matches within one path segment, `**` (a whole segment) any number of
segments, zero included, and `{a,b}` alternatives, which may contain dots and
globs and nest. A glob means the brace-free patterns its braces expand to,
each matched segment by segment; a comma outside braces is a literal character.

Braces are never expanded: twenty `{a,b}` groups stand for a million patterns.
A glob is read as an automaton over its own characters (each `{` branches to
its alternatives, each `,` and `}` joins after the group) and both checking a
glob and matching a path walk that automaton, so the work grows with the
glob's length, not with the number of patterns it stands for. Globs are at
most MAX_LENGTH characters and nest braces at most MAX_DEPTH deep. A target
that matches nothing is an error listing the closest paths.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import lru_cache

from surgeon.diagnostics import UserError, clip

MAX_LENGTH = 4096  # characters in one target glob
MAX_DEPTH = 32  # nesting of {...}

# how a path is read through a glob: items of an automaton state are (kind, index) packed
# into one int; the index is a character of the wrapped glob ("." + glob + ".")
_CHAR, _STAR, _DEEP, _DEEP_MID = range(4)  # at a literal, in `*`, in `**` (at / inside a segment)
_END = -1  # the whole glob is read
_DFA_CACHE = 4096  # remembered transitions per glob
_EMPTY_ALT = re.compile(r"\{,|,,|,\}|\{\}")
_STRUCTURE = re.compile(r"[{},]")
_BRACE = re.compile(r"[{}]")
_SPACE = re.compile(r"\s")
_OTHER = re.compile(r"[^.*]")  # the checks read characters as classes: `.`, `*`, a (any other)
_PARTIAL_DEEP = re.compile(r"[a*]\*\*|\*\*[a*]")  # `**` inside a segment (`..` is tested apart)


def _q(pattern: str) -> str:
    return repr(clip(pattern))


class _Glob:
    """A checked glob as an automaton: matches() runs a path through it."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        # sentinel dots: `**` is a whole segment iff it sits as `.**.`, and an empty segment
        # anywhere (leading and trailing ones included) shows as `..`
        w = self.text = "." + pattern + "."
        self.alts: dict[int, list[int]] = {}  # `{` -> where each alternative starts
        self.join: dict[int, int] = {}  # `,` or `}` of a group -> where the group's text resumes
        opened: list[int] = []
        for m in _STRUCTURE.finditer(w):
            i, c = m.start(), m.group()
            if c == "{":
                opened.append(i)
                self.alts[i] = [i + 1]
            elif c == "," and opened:
                self.alts[opened[-1]].append(i + 1)
            elif c == "}":
                self.join[i] = i + 1
                for a in self.alts[opened.pop()][1:]:
                    self.join[a - 1] = i + 1  # the `,` before each later alternative
        self._raw_memo: dict[int, tuple[int, ...]] = {}
        self._dfa: dict[tuple[frozenset[int], str], frozenset[int]] = {}
        self._start: frozenset[int] | None = None

    # ---------------------------------------------------------------- structure
    def _raw(self, k: int) -> tuple[int, ...]:
        """The characters (or _END) reachable from index k through braces and commas alone."""
        memo = self._raw_memo.get(k)
        if memo is not None:
            return memo
        out: list[int] = []
        seen: set[int] = set()
        todo = [k]
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            if i == len(self.text):
                out.append(_END)
            elif i in self.alts:
                todo.extend(reversed(self.alts[i]))
            elif i in self.join:
                todo.append(self.join[i])
            else:
                out.append(i)
        result = tuple(out)
        if len(self._raw_memo) < 4 * len(self.text):
            self._raw_memo[k] = result
        return result

    def _is_star(self, i: int) -> bool:
        return i != _END and self.text[i] == "*"

    # ---------------------------------------------------------------- matching
    def _add(self, i: int, out: set[int], todo: list[int]) -> None:
        """Enter character i (or _END) of the glob."""
        if i == _END:
            out.add(_END)
        elif self.text[i] != "*":
            out.add(i << 2 | _CHAR)
        else:  # `*` alone, or the first of a `**` (the next character, in some branch, is `*`)
            single = False
            for j in self._raw(i + 1):
                if self._is_star(j):
                    self._deep(j, out, todo)
                else:
                    single = True
            if single:
                out.add(i << 2 | _STAR)
                self._star_exits(i, out)

    def _star_exits(self, i: int, out: set[int]) -> None:
        for j in self._raw(i + 1):
            if j == _END:
                out.add(_END)
            elif not self._is_star(j):
                out.add(j << 2 | _CHAR)

    def _deep(self, j: int, out: set[int], todo: list[int]) -> None:
        """`**.` (the `.` after it included) matches zero or more `segment.`; j is its 2nd `*`."""
        out.add(j << 2 | _DEEP)
        todo.extend(d + 1 for d in self._raw(j + 1) if d != _END and self.text[d] == ".")

    def _close(self, todo: list[int], out: set[int]) -> frozenset[int]:
        seen: set[int] = set()
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            for i in self._raw(k):
                self._add(i, out, todo)
        return frozenset(out)

    def _step(self, state: frozenset[int], ch: str) -> frozenset[int]:
        key = (state, ch)
        found = self._dfa.get(key)
        if found is not None:
            return found
        out: set[int] = set()
        todo: list[int] = []
        for item in state:
            if item == _END:
                continue
            i, kind = item >> 2, item & 3
            if kind == _CHAR:
                if self.text[i] == ch:
                    todo.append(i + 1)
            elif kind == _STAR:
                if ch != ".":
                    out.add(item)
                    self._star_exits(i, out)
            elif ch == ".":  # in `**`: a dot ends a segment
                self._deep(i, out, todo)
            else:
                out.add(i << 2 | _DEEP_MID)
        result = self._close(todo, out)
        if len(self._dfa) >= _DFA_CACHE:
            self._dfa.clear()
        self._dfa[key] = result
        return result

    def matches(self, path: str) -> bool:
        if self._start is None:
            self._start = self._close([0], set())
        state = self._start
        for ch in "." + path + ".":
            state = self._step(state, ch)
            if not state:
                return False
        return _END in state

    # ---------------------------------------------------------------- checking
    def problem(self) -> str | None:
        """Why some pattern the glob stands for is invalid, found without expanding it.
        Every move in the text goes forward (into an alternative, past a group), so one pass
        in text order carries, to each place, what the last characters read may have been
        (_STATES): enough to see every `..`, `x**` and `**x` across braces."""
        w = self.text
        classes = _OTHER.sub("a", w)
        masks = [0] * (len(w) + 1)  # place -> bit set over _STATES
        masks[0] = 1
        found: set[str] = set()
        k = 0
        while k < len(w) and "empty" not in found:
            mask = masks[k]
            if k in self.alts:
                for a in self.alts[k]:
                    masks[a] |= mask
                k += 1
            elif k in self.join:
                masks[self.join[k]] |= mask
                k += 1
            else:  # a run of plain characters up to the next brace or comma of a group
                end = k + 1
                while end < len(w) and end not in self.alts and end not in self.join:
                    end += 1
                text = classes[k:end]
                out = 0
                for i, last in enumerate(_STATES):
                    if mask >> i & 1:
                        after, problem = _read(last, text)
                        if problem:
                            found.add(problem)
                        if problem != "empty":
                            out |= 1 << _STATES.index(after)
                masks[end] |= out
                k = end  # nothing jumps into a run
        if "empty" in found:
            return " has an empty path segment"
        if "deep" in found:
            return ": '**' must be a whole path segment"
        return None


# what the check remembers of the last characters read (classes: `a` is any other character)
_STATES = ("", ".", ".*", "**", "a", "a*")


@lru_cache(maxsize=4096)
def _read(last: str, text: str) -> tuple[str, str | None]:
    """Read `text` (classes) after `last`: what is remembered then, and any problem."""
    edge = last + text[:2]
    if ".." in edge or ".." in text:
        return "", "empty"
    deep = "a**" in edge or "**a" in edge or "***" in edge or _PARTIAL_DEEP.search(text)
    if text[-1] != "*":
        after = text[-1]
    else:
        before = text[-2] if len(text) > 1 else last[-1:]
        after = {".": ".*", "*": "**", "a": "a*"}[before]
    return after, "deep" if deep else None


def check_glob(pattern: str) -> None:
    """Raise ValueError if the glob cannot be a module-path pattern."""
    _checked(pattern)


@lru_cache(maxsize=1024)
def _checked(pattern: str) -> _Glob:
    if len(pattern) > MAX_LENGTH:
        raise ValueError(f"target is {len(pattern)} characters long; at most {MAX_LENGTH}")
    if not pattern.strip():
        raise ValueError("target is empty")
    if _SPACE.search(pattern):
        raise ValueError(f"target {_q(pattern)} contains whitespace")
    depth = 0
    for brace in _BRACE.findall(pattern):
        depth += 1 if brace == "{" else -1
        if depth < 0:
            raise ValueError(f"target {_q(pattern)} has a '}}' without '{{'")
        if depth > MAX_DEPTH:
            raise ValueError(f"target {_q(pattern)} nests braces more than {MAX_DEPTH} deep")
    if depth:
        raise ValueError(f"target {_q(pattern)} has an unclosed '{{'")
    if _EMPTY_ALT.search(pattern):
        raise ValueError(f"target {_q(pattern)} has an empty alternative")
    glob = _Glob(pattern)
    problem = glob.problem()
    if problem:
        raise ValueError(f"target {_q(pattern)}{problem}")
    return glob


def compile_glob(pattern: str) -> _Glob:
    """The checked glob, ready to match paths (cached)."""
    return _checked(pattern)


def match(pattern: str, paths: Iterable[str]) -> list[str]:
    glob = compile_glob(pattern)
    return [p for p in paths if glob.matches(p)]


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
    msg = f"target {_q(pattern)} matches no {what} of the model"
    if near:
        msg += "; closest paths:\n    " + "\n    ".join(near)
    raise UserError(msg, hint)
