"""User-facing errors: every one carries what a person needs to fix it.

Exit codes are part of the CLI contract: 2 for bad input (spec, model, targets),
3 for a compiled model that fails its `verify` checks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_USER = 2
EXIT_VERIFY = 3

QUOTE = 200  # characters of a token or source line quoted in a message, at most
_LINE = 2 * QUOTE  # characters of one message line, at most
_LINES = 40  # lines of one message, at most
_LONG_WORD = re.compile(r"\S{" + str(QUOTE + 1) + ",}")


def clip(text: str, limit: int = QUOTE) -> str:
    """`text`, or its first `limit` - 1 characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(message: str) -> str:
    """A message a terminal can show: long words (a quoted token or path, say) clipped
    to QUOTE characters, long lines to twice that, and at most _LINES lines."""
    if len(message) <= QUOTE and "\n" not in message:
        return message
    lines = [clip(_LONG_WORD.sub(lambda m: clip(m.group()), line), _LINE)
             for line in message.split("\n")]
    if len(lines) > _LINES:
        lines = [*lines[: _LINES - 1], f"... ({len(lines) - _LINES + 1} more lines)"]
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Control characters as U+FFFD, tabs as one space: one column per character, so a
    caret under column N sits under character N."""
    return "".join(" " if c == "\t" else "\ufffd" if c < " " or c == "\x7f" else c
                   for c in text)


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Closest candidates to a misspelled word, best first."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=0.5)


def hint_for(word: str, candidates: Iterable[str]) -> str | None:
    close = did_you_mean(word, candidates)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


class UserError(Exception):
    """Bad input. The CLI prints it without a traceback and exits with 2."""

    exit_code = EXIT_USER

    def __init__(self, message: str, hint: str | None = None):
        message = bounded(message)
        super().__init__(message)
        self.message = message
        self.hint = bounded(hint) if hint else hint

    def format(self) -> str:
        text = f"error: {self.message}"
        return text + (f"\n  hint: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    column: int
    source_line: str
    width: int = 1


class SpecError(UserError):
    """An error at a place in a spec file: file:line:col, the line, a caret."""

    def __init__(self, message: str, where: Location, hint: str | None = None):
        super().__init__(message, hint)
        self.where = where

    @property
    def line(self) -> int:
        return self.where.line

    @property
    def column(self) -> int:
        return self.where.column

    def format(self) -> str:
        w = self.where
        gutter = f"{w.line:>4} | "
        source, column, width = _window(w.source_line, w.column, w.width)
        caret = " " * (len(gutter) - 2) + "| " + " " * (column - 1) + "^" * width
        head = f"{w.file}:{w.line}:{w.column}: error: {self.message}"
        lines = [head, gutter + source, caret]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _window(line: str, column: int, width: int) -> tuple[str, int, int]:
    """At most QUOTE characters of a source line around the caret: (text, column, width)."""
    column, width = max(column, 1), max(width, 1)
    if len(line) <= QUOTE:
        text, col = _printable(line), column
    else:
        start = max(0, min(column - 1 - QUOTE // 4, len(line) - QUOTE))
        end = start + QUOTE
        text = _printable(line[start:end])
        if start:
            text = "…" + text[1:]
        if end < len(line):
            text = text[:-1] + "…"
        col = column - start
    # the caret may sit one past the end of the line (a statement that ends too early)
    return text, col, max(1, min(width, len(text) - col + 2))


class VerifyError(Exception):
    """The compiled model fell below a `verify` threshold (exit code 3)."""

    exit_code = EXIT_VERIFY

    def __init__(self, failures: list[str], measured: dict[str, float]):
        super().__init__("; ".join(failures))
        self.failures = failures
        self.measured = measured

    def format(self) -> str:
        return "verify failed: " + "; ".join(self.failures)


class PassError(Exception):
    """A pass broke: says which pass, what ran before it and which spec line asked for it."""

    exit_code = 1

    def __init__(self, pass_name: str, before: list[str], spec_line: int | None, cause: Exception):
        where = f"spec line {spec_line}" if spec_line else "no spec line"
        done = ", ".join(before) if before else "none"
        super().__init__(
            f"pass {pass_name!r} ({where}) failed after passes [{done}]: "
            f"{type(cause).__name__}: {cause}"
        )
        self.pass_name = pass_name
        self.before = before
        self.spec_line = spec_line

    def format(self) -> str:
        return f"error: {self}"
