"""Spec text -> IR. The grammar lives in grammar/surgery.lark; one lark
Transformer builds IR nodes directly, with a source span on each.

Every failure becomes a SpecError at file:line:col with a caret, and a
"did you mean" when a word is close to a keyword the parser expected.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib.resources import files
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from pydantic import ValidationError

from surgeon import ir
from surgeon.diagnostics import Location, SpecError, hint_for

_PLACEHOLDERS = {"STRING": "a quoted string", "NUMBER": "a number", "NAME": "a name",
                 "CMP": "'>=' or '<='", "_NL": "end of line", "$END": "end of file"}


@lru_cache(maxsize=1)
def parser() -> Lark:
    grammar = files("surgeon.grammar").joinpath("surgery.lark").read_text(encoding="utf-8")
    # basic lexer: a word is lexed whole and only then recognised as a keyword, so
    # "prunes" is reported as an unknown word rather than split into "prune" + "s"
    return Lark(grammar, parser="lalr", lexer="basic", strict=True, propagate_positions=True,
                maybe_placeholders=False)


def _literal(term: str) -> str | None:
    """The keyword text of an anonymous terminal, e.g. FACTORIZE -> 'factorize'."""
    try:
        pattern = parser().get_terminal(term).pattern
    except KeyError:
        return None
    return pattern.value if pattern.type == "str" else None


def keywords() -> set[str]:
    return {t.pattern.value for t in parser().terminals
            if t.pattern.type == "str" and t.pattern.value.isalpha()}


class _Located(ValueError):
    """A ValueError that knows which token it is about."""

    def __init__(self, message: str, token: Any):
        super().__init__(message)
        self.token = token


def _span(meta: Any) -> ir.Span:
    return ir.Span(line=meta.line, column=meta.column,
                   end_line=meta.end_line, end_column=meta.end_column)


def _tok_span(tok: Token) -> ir.Span:
    return ir.Span(line=tok.line, column=tok.column,
                   end_line=tok.end_line or tok.line, end_column=tok.end_column or tok.column)


def _int(tok: Token, what: str) -> int:
    value = float(tok)
    if not value.is_integer():
        raise _Located(f"{what} must be a whole number, got {tok}", tok)
    return int(value)


def _string(tok: Token) -> str:
    try:
        return json.loads(tok, strict=False)  # strict=False: a literal tab is fine
    except json.JSONDecodeError:
        raise _Located("invalid escape in string (escapes follow JSON: \\\\ \\\" \\n \\t "
                       "\\uXXXX); on Windows write paths with '/'", tok) from None


def _options(opts: list[tuple[str, Any, Token]], fields: dict[str, Any],
             tokens: dict[str, Token]) -> None:
    """Fold `key value` options into fields, each at most once."""
    for key, value, tok in opts:
        if key in tokens:
            raise _Located(f"'{key}' given twice", tok)
        fields[key], tokens[key] = value, tok


def _build(cls: type[ir.Node], where: Any, tokens: dict[str, Token], **fields: Any) -> Any:
    """Construct an IR node; a validation error points at the offending token."""
    span = _span(where) if not isinstance(where, Token) else _tok_span(where)
    try:
        return cls(span=span, **fields)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise _Located(msg, tokens.get(field, where)) from None


@v_args(meta=True)
class ToIR(Transformer):
    """Parse tree -> ir.Spec."""

    def model_embedded(self, meta: Any, c: list[Token]) -> ir.ModelSource:
        return _build(ir.ModelSource, meta, {"ref": c[0]}, source="embedded", ref=_string(c[0]))

    def model_hf(self, meta: Any, c: list[Token]) -> ir.ModelSource:
        return _build(ir.ModelSource, meta, {"ref": c[0]}, source="hf", ref=_string(c[0]))

    def model_python(self, meta: Any, c: list[Token]) -> ir.ModelSource:
        return _build(ir.ModelSource, meta, {"ref": c[0]}, source="python", ref=_string(c[0]))

    def dim(self, meta: Any, c: list[Token]) -> Token:
        return c[0]

    def input(self, meta: Any, c: list[Any]) -> ir.InputSig:
        name, dtype, *dims = c
        shape = []
        for tok in dims:
            value = _int(tok, "a dimension") if tok.type == "NUMBER" else str(tok)
            if value == 0:
                raise _Located("static dimensions must be >= 1", tok)
            shape.append(value)
        return _build(ir.InputSig, meta, {"dtype": dtype, "name": name},
                      name=_string(name), dtype=str(dtype), shape=tuple(shape))

    def corpus_file(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"corpus": "file", "path": _string(c[0])}

    def corpus_builtin(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"corpus": "builtin"}

    def corpus_random(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"corpus": "random"}

    def samples(self, meta: Any, c: list[Token]) -> tuple[str, int, Token]:
        return ("samples", _int(c[0], "samples"), c[0])

    def seqlen(self, meta: Any, c: list[Token]) -> tuple[str, int, Token]:
        return ("seqlen", _int(c[0], "seqlen"), c[0])

    def seed(self, meta: Any, c: list[Token]) -> tuple[str, int, Token]:
        return ("seed", _int(c[0], "seed"), c[0])

    def calibrate(self, meta: Any, c: list[Any]) -> ir.Calibrate:
        corpus, *opts = c
        fields, tokens = dict(corpus), {}
        _options(opts, fields, tokens)
        return _build(ir.Calibrate, meta, tokens, **fields)

    def rank(self, meta: Any, c: list[Token]) -> ir.Rank:
        return _build(ir.Rank, meta, {"value": c[0]}, value=_int(c[0], "rank"))

    def params(self, meta: Any, c: list[Token]) -> ir.ParamsFraction:
        return _build(ir.ParamsFraction, meta, {"percent": c[0]}, percent=float(c[0]))

    def energy(self, meta: Any, c: list[Token]) -> ir.Energy:
        return _build(ir.Energy, meta, {"fraction": c[0]}, fraction=float(c[0]))

    def budget(self, meta: Any, c: list[Token]) -> ir.Budget:
        return _build(ir.Budget, meta, {"percent": c[0]}, percent=float(c[0]))

    def alpha(self, meta: Any, c: list[Token]) -> Token:
        return c[0]

    def method(self, meta: Any, c: list[Token]) -> list[Token]:
        return c

    def factorize(self, meta: Any, c: list[Any]) -> ir.Factorize:
        target, rank, *method = c
        fields: dict[str, Any] = {"target": _string(target), "rank": rank}
        tokens = {"target": target}
        if method:
            name, *alpha = method[0]
            fields["method"], tokens["method"] = str(name), name
            if alpha:
                fields["alpha"], tokens["alpha"] = float(alpha[0]), alpha[0]
        return _build(ir.Factorize, meta, tokens, **fields)

    def verify(self, meta: Any, c: list[Token]) -> ir.Verify:
        metric, op, value = c
        return _build(ir.Verify, meta, {"metric": metric, "op": op, "threshold": value},
                      metric=str(metric), op=str(op), threshold=float(value))

    def opset(self, meta: Any, c: list[Token]) -> Token:
        return c[0]

    def export(self, meta: Any, c: list[Token]) -> ir.ExportOnnx:
        fields: dict[str, Any] = {"path": _string(c[0])}
        tokens = {"path": c[0]}
        if len(c) > 1:
            fields["opset"], tokens["opset"] = _int(c[1], "opset"), c[1]
        return _build(ir.ExportOnnx, meta, tokens, **fields)

    def save(self, meta: Any, c: list[Token]) -> ir.Save:
        return _build(ir.Save, meta, {"path": c[0]}, path=_string(c[0]))

    def save_adapters(self, meta: Any, c: list[Token]) -> ir.SaveAdapters:
        return _build(ir.SaveAdapters, meta, {"path": c[0]}, path=_string(c[0]))

    def dropout(self, meta: Any, c: list[Token]) -> tuple[str, float, Token]:
        return ("dropout", float(c[0]), c[0])

    def init(self, meta: Any, c: list[Token]) -> tuple[str, str, Token]:
        return ("init", str(c[0]), c[0])

    def rho(self, meta: Any, c: list[Token]) -> tuple[str, float, Token]:
        return ("rho", float(c[0]), c[0])

    def adapter(self, meta: Any, c: list[Any]) -> ir.Adapter:
        method, target, rank, alpha, *opts = c
        fields: dict[str, Any] = {"method": str(method), "target": _string(target),
                                  "rank": _int(rank, "rank"), "alpha": float(alpha)}
        tokens = {"method": method, "target": target, "rank": rank, "alpha": alpha}
        _options(opts, fields, tokens)
        return _build(ir.Adapter, meta, tokens, **fields)

    def adapter_load(self, meta: Any, c: list[Token]) -> ir.AdapterLoad:
        return _build(ir.AdapterLoad, meta, {"path": c[0]}, path=_string(c[0]))

    def fold(self, meta: Any, c: list[Token]) -> ir.Fold:
        return ir.Fold(span=_span(meta))

    def save_hf(self, meta: Any, c: list[Token]) -> ir.SaveHF:
        return _build(ir.SaveHF, meta, {"path": c[0]}, path=_string(c[0]))

    def report(self, meta: Any, c: list[Token]) -> ir.Report:
        return _build(ir.Report, meta, {"path": c[0]}, path=_string(c[0]))

    def remove(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"mode": "remove", "count": _int(c[0], "a layer count"), "_tok": c[0]}

    def keep(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"mode": "keep", "count": _int(c[0], "a layer count"), "_tok": c[0]}

    def where(self, meta: Any, c: list[Token]) -> dict[str, Any]:
        return {"mode": "where", "threshold": float(c[0]), "_tok": c[0]}

    def prune(self, meta: Any, c: list[Any]) -> ir.PruneLayers:
        layers, amount, by = c
        tok = amount.pop("_tok")
        tokens = {"layers": layers, "by": by, "count": tok, "threshold": tok}
        return _build(ir.PruneLayers, meta, tokens, layers=_string(layers), by=str(by), **amount)

    def start(self, meta: Any, stmts: list[ir.Node]) -> ir.Spec:
        return _assemble(stmts)


def _assemble(stmts: list[ir.Node]) -> ir.Spec:
    """Check statement order and multiplicity, then build the Spec."""
    models = [s for s in stmts if isinstance(s, ir.ModelSource)]
    if not models:
        raise _Located("the spec has no 'model' statement", None)
    if len(models) > 1:
        raise _Located("only one 'model' statement is allowed", models[1].span)
    if stmts[0] is not models[0]:
        raise _Located("'model' must be the first statement", models[0].span)
    calib = [s for s in stmts if isinstance(s, ir.Calibrate)]
    if len(calib) > 1:
        raise _Located("only one 'calibrate' statement is allowed", calib[1].span)
    seen_final = None
    for s in stmts:
        if isinstance(s, (ir.Verify, *ir.OUTPUT_TYPES)):
            seen_final = seen_final or s
        elif isinstance(s, ir.PASS_TYPES) and seen_final is not None:
            raise _Located(f"'{s.kind}' comes after '{_first_word(seen_final)}': checks and "
                           "outputs are about the final model, so passes go before them", s.span)
    fields: dict[str, Any] = {
        "model": models[0],
        "inputs": tuple(s for s in stmts if isinstance(s, ir.InputSig)),
        "steps": tuple(s for s in stmts if isinstance(s, ir.PASS_TYPES)),
        "checks": tuple(s for s in stmts if isinstance(s, ir.Verify)),
        "outputs": tuple(s for s in stmts if isinstance(s, ir.OUTPUT_TYPES)),
    }
    _no_repeats(fields["inputs"], lambda s: s.name, "input {!r} is declared twice")
    _no_repeats(fields["outputs"], lambda s: os.path.normpath(s.path),
                "two outputs write the same path {!r}")
    if calib:
        fields["calibrate"] = calib[0]
    return ir.Spec(span=models[0].span, **fields)


def _no_repeats(nodes: tuple[Any, ...], key: Any, message: str) -> None:
    seen: set[Any] = set()
    for node in nodes:
        if key(node) in seen:
            raise _Located(message.format(key(node)), node.span)
        seen.add(key(node))


def _first_word(node: ir.Node) -> str:
    return node.to_text().split()[0]  # type: ignore[attr-defined]


def parse_spec(text: str, file: str = "<spec>") -> ir.Spec:
    lines = [line.removesuffix("\r") for line in text.split("\n")]  # lark ends lines at \n only
    source = text if text.endswith("\n") else text + "\n"
    try:
        tree = parser().parse(source)
        return ToIR().transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, _Located):
            raise _located_error(e.orig_exc, lines, file) from None
        raise
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, lines, file) from None


def _where(lines: list[str], file: str, line: int, column: int, width: int = 1) -> Location:
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    return Location(file, line, column, src, width)


def _located_error(err: _Located, lines: list[str], file: str) -> SpecError:
    tok = err.token
    if isinstance(tok, Token):
        where = _where(lines, file, tok.line, tok.column, len(tok))
    elif isinstance(tok, ir.Span):
        width = tok.end_column - tok.column if tok.end_line == tok.line else 1
        where = _where(lines, file, tok.line, tok.column, width)
    elif tok is not None and getattr(tok, "line", None):
        where = _where(lines, file, tok.line, tok.column)
    else:
        where = _where(lines, file, 1, 1)
    msg = str(err)
    hint = None
    if "; did you mean" in msg:
        msg, hint = msg.split("; ", 1)
    return SpecError(msg, where, hint)


def _code(line: str) -> str:
    """The line without its trailing comment (a '#' outside a string)."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i]
    return line


def _expected_words(expected: set[str]) -> tuple[list[str], list[str]]:
    words, kinds = [], []
    for term in sorted(expected):
        lit = _literal(term)
        if lit is not None:
            words.append(lit)
        else:
            kinds.append(_PLACEHOLDERS.get(term, term))
    return sorted(words), kinds


def _describe(words: list[str], kinds: list[str]) -> str:
    items = [repr(w) for w in words] + kinds
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _syntax_error(e: lark.exceptions.UnexpectedInput, lines: list[str], file: str) -> SpecError:
    line, column = max(e.line, 1), max(e.column, 1)
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        src = lines[line - 1] if line <= len(lines) else ""
        rest = src[column - 1 :]
        if rest.startswith('"'):
            return SpecError("unterminated string", _where(lines, file, line, column, len(rest)))
        return SpecError(f"unexpected character {rest[:1]!r}", _where(lines, file, line, column))
    if isinstance(e, lark.exceptions.UnexpectedEOF):
        last = len(lines)
        col = len(lines[-1]) + 1 if lines else 1
        return SpecError("unexpected end of file", _where(lines, file, max(last, 1), col))
    assert isinstance(e, lark.exceptions.UnexpectedToken)
    tok = e.token
    words, kinds = _expected_words(set(e.expected))
    expected = _describe(words, kinds)
    if tok.type == "_NL" or tok.type == "$END":
        src = lines[line - 1] if line <= len(lines) else ""
        where = _where(lines, file, line, len(_code(src).rstrip()) + 1)
        return SpecError(f"statement ends too early; expected {expected}", where)
    where = _where(lines, file, line, column, len(str(tok)))
    if tok.type == "NAME" and words:
        hint = hint_for(str(tok), words) or hint_for(str(tok), keywords())
        return SpecError(f"unknown keyword {str(tok)!r}; expected {expected}", where, hint)
    return SpecError(f"unexpected {str(tok)!r}; expected {expected}", where)
