"""Spec text -> IR. The grammar lives in grammar/surgery.lark; each statement rule
is named after the `kind` of the IR node it builds, and the IR class's field
markers (surgeon/syntax.py) say which field each token fills, so one generic
builder serves every statement: a new step adds no code here.

Every failure becomes a SpecError at file:line:col with a caret, and a
"did you mean" when a word is close to a keyword the parser expected.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import lark
from lark import Lark, Token
from pydantic import ValidationError

from surgeon import ir, syntax
from surgeon.diagnostics import Location, SpecError, UserError, clip, hint_for

_PLACEHOLDERS = {"STRING": "a quoted string", "NUMBER": "a number", "NAME": "a name",
                 "CMP": "'>=' or '<='", "_NL": "end of line", "$END": "end of file"}
_VALUES = frozenset({"STRING", "NUMBER", "NAME", "CMP"})  # every other token is a keyword
_MAX_EXPONENT = 30  # integers past 1e30 are refused before int() builds them
# Bounds that keep `surgeon check` fast and small on any input; real specs are a few KB.
MAX_SPEC_BYTES = 256 << 10  # a spec file (text, YAML or JSON)
MAX_SPEC_LINES = 10_000
MAX_LINE_LENGTH = 10_000  # characters; a target glob has at most 4096
MAX_SPEC_TOKENS = 10_000  # words, values and symbols of a text spec
# about the tokens lark makes, counted before parsing (Lark.lex() builds a new lexer on
# each call, which costs more than parsing a small spec): strings, comments (not counted),
# words and numbers, line ends, symbols
_ROUGH_TOKEN = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"?|#[^\n]*|[A-Za-z0-9_.]+|\n\s*|[^\s\w.]')
_SURROGATE = re.compile("[\ud800-\udfff]")  # a \uXXXX escape can name half a character
MAX_DATA_EVENTS = 20_000  # YAML events read before a YAML spec is refused as too large
MAX_DATA_NODES = 10_000  # values in a YAML or JSON spec, aliases counted each time used
MAX_DATA_DEPTH = 32  # nesting of a YAML or JSON spec


@cache
def parser(strict: bool = False) -> Lark:
    """The spec parser. basic lexer: a word is lexed whole and only then recognised as a
    keyword, so "prunes" is reported as an unknown word rather than split into "prune" +
    "s"; keep_all_tokens: keywords say which field the next value fills. strict (no
    shift/reduce conflict, no terminal collision) is proven by a test; checking it again
    on every start would cost `surgeon check` 0.15 s, and the tables are the same."""
    grammar = files("surgeon.grammar").joinpath("surgery.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", strict=strict, propagate_positions=True,
                maybe_placeholders=False, keep_all_tokens=True)


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
    """A ValueError that knows which token (or statement span) it is about."""

    def __init__(self, message: str, token: Any):
        super().__init__(message)
        self.token = token


def _span(meta: Any) -> ir.Span:
    return ir.Span(line=meta.line, column=meta.column,
                   end_line=meta.end_line, end_column=meta.end_column)


# ---------------------------------------------------------------- declarations
@dataclass(frozen=True)
class _Syntax:
    """Where the tokens of one statement go, read from its IR class's field markers."""

    args: tuple[str, ...]
    options: dict[str, str]  # keyword -> field
    choices: dict[str, str]  # keyword that is itself the value -> field
    nodes: dict[type, str]  # sub-node class -> field
    hundredths: frozenset[str]  # fields whose value may be written as a percentage


@cache
def _syntax(cls: type[ir.Node]) -> _Syntax:
    args: list[str] = []
    options: dict[str, str] = {}
    choices: dict[str, str] = {}
    nodes: dict[type, str] = {}
    hundredths: set[str] = set()
    for name, info in cls.model_fields.items():
        mark = syntax.marker(info.metadata)
        nodes.update(dict.fromkeys(_node_types(info.annotation), name))
        if isinstance(mark, syntax.Arg):
            args.append(name)
            if mark.hundredths:
                hundredths.add(name)
        elif isinstance(mark, syntax.Option):
            options.update(dict.fromkeys(mark.keywords or (name,), name))
        elif isinstance(mark, syntax.Choice):
            choices.update(dict.fromkeys(get_args(_strip(info.annotation)), name))
    return _Syntax(tuple(args), options, choices, nodes, frozenset(hundredths))


def _strip(annotation: Any) -> Any:
    """The annotation without Optional: int | None -> int."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _node_types(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and issubclass(annotation, ir.Node):
        return [annotation]
    return [t for a in get_args(annotation) for t in _node_types(a)]


# ---------------------------------------------------------------- values
def _value(tok: Token, annotation: Any, field: str) -> Any:
    """A value token as the field holds it (a tuple field: one element of it)."""
    if tok.type == "STRING":
        return _string(tok)
    if tok.type != "NUMBER":
        return str(tok)
    base = _strip(annotation)
    if base is int or get_origin(base) is tuple:
        return _integer(tok, "a dimension" if get_origin(base) is tuple else field)
    value = float(tok)
    if not math.isfinite(value):
        raise _Located(f"{field} {clip(str(tok))} is out of range", tok)
    return value


def _integer(tok: Token, what: str) -> int:
    """Exact: digits parse as themselves, never through a float; 2.0 and 1e3 are whole.
    NUMBER is ASCII digits only (grammar/surgery.lark)."""
    text = str(tok)
    if text.isdigit() and len(text.lstrip("0")) <= _MAX_EXPONENT + 1:
        return int(text)
    number = Decimal(text)
    if number.adjusted() > _MAX_EXPONENT:
        raise _Located(f"{what} {clip(text)} is out of range", tok)
    if number != number.to_integral_value():
        raise _Located(f"{what} must be a whole number, got {clip(text)}", tok)
    return int(number)


def _string(tok: Token) -> str:
    try:
        value = json.loads(tok, strict=False)  # strict=False: a literal tab is fine
    except json.JSONDecodeError:
        raise _Located("invalid escape in string (escapes follow JSON: \\\\ \\\" \\n \\t "
                       "\\uXXXX); on Windows write paths with '/'", tok) from None
    problem = _bad_text(value)
    if problem:
        raise _Located(f"invalid string: {problem}", tok)
    return value


def _bad_text(value: str) -> str | None:
    """What makes a spec string unusable as a name or a path, if anything."""
    half = _SURROGATE.search(value)
    if half:
        return f"\\u{ord(half.group()):04x} is half of a surrogate pair, not a character"
    if "\x00" in value:
        return "it holds a NUL character, which no path or name may"
    return None


# ---------------------------------------------------------------- tree -> IR
def _items(children: list[Any]) -> list[Any]:
    """Tokens and built nodes in source order; line ends dropped."""
    out = []
    for c in children:
        if isinstance(c, lark.Tree):
            out += _items(c.children)
        elif not (isinstance(c, Token) and c.type == "_NL"):
            out.append(c)
    return out


class ToIR(lark.Transformer):
    """Parse tree -> IR: a rule named after an IR kind builds that node."""

    def __default__(self, data: Any, children: list[Any], meta: Any) -> Any:
        cls = ir.node_class(str(data))
        if cls is None:
            return lark.Tree(data, children, meta)
        return _build(cls, children, meta)

    def start(self, children: list[Any]) -> ir.Spec:
        return _assemble([c for c in children if isinstance(c, ir.Node)])


def _build(cls: type[ir.Node], children: list[Any], meta: Any) -> ir.Node:
    """Fill the fields of `cls` from a statement's tokens and sub-nodes, then validate."""
    syn = _syntax(cls)
    fields: dict[str, Any] = {}
    tokens: dict[str, Any] = {}
    args = iter(syn.args)
    current: str | None = None  # the field the last keyword announced
    last: str | None = None  # the field the last value filled
    items = _items(children)
    head = cls.keyword.split()
    if [str(t) for t in items[: len(head)]] == head:
        items = items[len(head):]
    for item in items:
        if isinstance(item, ir.Node):
            fields[syn.nodes[type(item)]] = item
        elif item.type not in _VALUES:
            word = str(item)
            if word in syn.choices:
                fields[syn.choices[word]] = word
                tokens[syn.choices[word]] = item
            if word in syn.options:
                current = syn.options[word]
            if word == "%" and last in syn.hundredths:  # `<= 5%` is 0.05
                fields[last] /= 100
        else:
            field = current or next(args, None)
            if field is None:  # the grammar and the IR declaration disagree: our bug
                raise TypeError(f"{cls.__name__} declares no field for {item!r} (check its "
                                "Arg/Option markers against its grammar rule)")
            if field in tokens and not isinstance(tokens[field], list):
                raise _Located(f"'{_keyword_of(syn, field)}' given twice", item)
            annotation = cls.model_fields[field].annotation
            # a node with one value (`rank 8`) names it by its keyword in messages
            what = cls.keyword if syn.args == (field,) and cls.keyword else field
            value = _value(item, annotation, what)
            if get_origin(_strip(annotation)) is tuple:  # takes every value that follows
                fields.setdefault(field, []).append(value)
                tokens.setdefault(field, []).append(item)
                current = field
            else:
                fields[field], tokens[field], current = value, item, None
            last = field
    try:
        return cls(span=_span(meta), **fields)
    except ValidationError as e:
        raise _located(e, tokens, meta) from None


def _keyword_of(syn: _Syntax, field: str) -> str:
    return next((k for k, f in syn.options.items() if f == field), field)


def _located(e: ValidationError, tokens: dict[str, Any], meta: Any) -> _Located:
    """The first validation error, at the token of the field it is about."""
    err = e.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ir.NodeError):
        return _Located(msg, cause.node.span)
    loc = err["loc"]
    where = tokens.get(str(loc[0]), meta) if loc else meta
    if isinstance(where, list):
        where = where[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) else where[0]
    return _Located(msg, where)


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
    final = next((s for s in stmts if isinstance(s, ir.Verify | ir.Output)), None)
    for s in stmts[stmts.index(final):] if final else []:
        if isinstance(s, ir.Step):
            raise _Located(f"'{s.kind}' comes after '{final.keyword.split()[0]}': checks and "
                           "outputs are about the final model, so passes go before them", s.span)
    fields: dict[str, Any] = {
        "model": models[0],
        "inputs": tuple(s for s in stmts if isinstance(s, ir.InputSig)),
        "steps": tuple(s for s in stmts if isinstance(s, ir.Step)),
        "checks": tuple(s for s in stmts if isinstance(s, ir.Verify)),
        "outputs": tuple(s for s in stmts if isinstance(s, ir.Output)),
    }
    if calib:
        fields["calibrate"] = calib[0]
    try:
        return ir.Spec(span=models[0].span, **fields)
    except ValidationError as e:
        raise _located(e, {}, None) from None


# ---------------------------------------------------------------- entry points
def load_spec(path: str | Path) -> ir.Spec:
    """Read a .surg, .yaml/.yml or .json spec; all three give the same IR."""
    path = Path(path)
    text = _read_spec(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        spec = _load_structured(text, path)
    else:
        spec = parse_spec(text, str(path))
    return spec.model_copy(update={"source_file": str(path)})


def _read_spec(path: Path) -> str:
    """The spec's text: at most MAX_SPEC_BYTES (also from a pipe or a device), UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read spec {str(path)!r}: {e.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise UserError(f"spec {str(path)!r} is larger than {MAX_SPEC_BYTES // 1024} KiB; "
                        "a spec is a short list of statements")
    try:
        return data.decode("utf-8-sig")  # a byte order mark is dropped
    except UnicodeDecodeError as e:
        raise _not_utf8(data, e, str(path)) from None


def _not_utf8(data: bytes, e: UnicodeDecodeError, file: str) -> SpecError:
    """Where the first byte that is not UTF-8 sits: line, column and byte offset."""
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    end = data.find(b"\n", e.start)
    src = data[start : end if end >= 0 else len(data)].decode("utf-8", "replace")
    column = len(data[start : e.start].decode("utf-8", "replace")) + 1
    return SpecError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start}",
                     Location(file, line, column, src.removesuffix("\r")),
                     "save the spec as UTF-8")


def _load_structured(text: str, path: Path) -> ir.Spec:
    import yaml

    kind = path.suffix[1:].upper()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            _check_yaml_size(text, path)
            data = yaml.load(text, Loader=_yaml_loader())  # a safe loader
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not valid {kind}: {e}") from None
    except (ValueError, RecursionError) as e:  # [[[[...]]]]; an integer of 5000 digits
        what = ("nested too deeply" if isinstance(e, RecursionError) else
                "a number has too many digits" if str(e).startswith("Exceeds the limit") else
                str(e))
        raise UserError(f"{path}: not valid {kind}: {what}") from None
    _check_data_size(data, path)
    try:
        return ir.Spec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg, _, hint = str(first["msg"]).removeprefix("Value error, ").partition("; did you mean")
        raise UserError(f"{path}: {loc}: {msg}",
                        f"did you mean{hint}" if hint else None) from None


def _yaml_loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there: 4x faster


def _check_yaml_size(text: str, path: Path) -> None:
    """Refuse a YAML spec of more than MAX_DATA_EVENTS events before building any of it."""
    loader = _yaml_loader()(text)
    try:
        for _ in range(MAX_DATA_EVENTS):
            if not loader.check_event():
                return
            loader.get_event()
    finally:
        loader.dispose()
    raise UserError(f"{path}: too large: more than {MAX_DATA_EVENTS} YAML events")


def _check_data_size(data: Any, path: Path) -> None:
    """At most MAX_DATA_NODES values nested at most MAX_DATA_DEPTH deep. YAML aliases count
    each time they are used (the IR validates them as copies), so an alias bomb stops here."""
    todo: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    for _ in range(MAX_DATA_NODES):
        if not todo:
            return
        value, loc = todo.pop()
        if len(loc) > MAX_DATA_DEPTH:
            raise UserError(f"{path}: nested more than {MAX_DATA_DEPTH} levels deep")
        if isinstance(value, dict):
            todo += [(k, (*loc, k)) for k in value if isinstance(k, str)]
            todo += [(v, (*loc, k)) for k, v in value.items()]
        elif isinstance(value, list | tuple | set | frozenset):
            todo += [(v, (*loc, i)) for i, v in enumerate(value)]
        elif isinstance(value, str) and _bad_text(value):
            where = ".".join(str(p) for p in loc) or "(top level)"
            raise UserError(f"{path}: {where}: invalid string: {_bad_text(value)}")
    if todo:
        raise UserError(f"{path}: too large: more than {MAX_DATA_NODES} values")


def parse_spec(text: str, file: str = "<spec>") -> ir.Spec:
    lines = [line.removesuffix("\r") for line in text.split("\n")]  # lark ends lines at \n only
    source = text if text.endswith("\n") else text + "\n"
    _check_size(source, lines, file)
    try:
        return ToIR().transform(parser().parse(source))
    except lark.exceptions.VisitError as e:  # from start(): lark wraps its errors
        if isinstance(e.orig_exc, _Located):
            raise _located_error(e.orig_exc, lines, file) from None
        raise
    except _Located as e:  # from __default__, which lark does not wrap
        raise _located_error(e, lines, file) from None
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, lines, file) from None


def _check_size(source: str, lines: list[str], file: str) -> None:
    """Refuse a spec past MAX_SPEC_BYTES, MAX_SPEC_LINES, MAX_LINE_LENGTH or MAX_SPEC_TOKENS
    before parsing: each is far beyond a real spec, and lexing a very long token or run of
    blank lines takes memory in proportion (the regular expressions repeat a group)."""
    if len(source) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a short "
                        "list of statements", _where(lines, file, 1, 1))
    if len(lines) > MAX_SPEC_LINES + 1:  # the text after the last line end counts as a line
        raise SpecError(f"spec has more than {MAX_SPEC_LINES} lines",
                        _where(lines, file, MAX_SPEC_LINES + 1, 1))
    longest = max(range(len(lines)), key=lambda i: len(lines[i]))
    if len(lines[longest]) > MAX_LINE_LENGTH:
        raise SpecError(f"line is longer than {MAX_LINE_LENGTH} characters",
                        _where(lines, file, longest + 1, MAX_LINE_LENGTH + 1))
    count = 0
    for m in _ROUGH_TOKEN.finditer(source):
        if m.group().startswith("#"):
            continue
        count += 1
        if count > MAX_SPEC_TOKENS:
            line = source.count("\n", 0, m.start()) + 1
            column = m.start() - source.rfind("\n", 0, m.start())
            raise SpecError(f"spec has more than {MAX_SPEC_TOKENS} words, values and symbols; "
                            "a spec is a short list of statements",
                            _where(lines, file, line, column, len(m.group().rstrip())))


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
        return SpecError(f"unknown keyword {clip(str(tok))!r}; expected {expected}", where, hint)
    return SpecError(f"unexpected {clip(str(tok))!r}; expected {expected}", where)
