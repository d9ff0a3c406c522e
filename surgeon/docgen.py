"""docs/language.md, generated: `python -m surgeon.docgen` writes it, `--check` fails
when the committed file is stale (a test runs that).

Per statement: the IR class's docstring, its grammar rules (grammar/surgery.lark),
a table of its fields from the declarations in surgeon/ir.py (how each is written,
type, default, description), the catalogue of any field that names a method,
then the hand-written prose in docs/language/<kind>.md. The method catalogues
and the observers close the reference; the general sections (overview, globs,
YAML, diagnostics) are hand-written fragments beside the statement prose.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic_core import PydanticUndefined

from surgeon import ir, syntax
from surgeon.catalogue import Catalogue
from surgeon.methods import FAMILIES
from surgeon.observers import OBSERVERS

REPO = Path(__file__).resolve().parent.parent
FRAGMENTS = REPO / "docs" / "language"
TARGET = REPO / "docs" / "language.md"
_RULE = re.compile(r"^([_a-z][_a-z0-9]*)\s*:", re.M)
_TAIL = (("Target globs", "globs"), ("YAML and JSON", "yaml"),
         ("Diagnostics and exit codes", "diagnostics"))


def _grammar() -> str:
    return files("surgeon.grammar").joinpath("surgery.lark").read_text(encoding="utf-8")


def _rules(text: str) -> dict[str, str]:
    """Rule name -> its definition (with continuation lines) in the .lark file."""
    out: dict[str, str] = {}
    matches = list(_RULE.finditer(text))
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        body = text[m.start(): nxt.start() if nxt else len(text)]
        keep = []
        for line in body.splitlines():
            if keep and not line.startswith((" ", "\t")):
                break
            keep.append(line)
        out[m.group(1)] = "\n".join(keep).rstrip()
    return out


def _statement_kinds(rules: dict[str, str]) -> list[str]:
    """The statement rules in the grammar's order (the alternatives of _statement)."""
    body = rules["_statement"].split(":", 1)[1]
    return [w.strip() for w in body.replace("\n", " ").split("|") if w.strip()]


def _syntax_block(kind: str, rules: dict[str, str]) -> str:
    """The statement's rule and every rule it uses, in first-use order."""
    seen, order = set(), [kind]
    while order:
        name = order.pop(0)
        if name in seen or name not in rules:
            continue
        seen.add(name)
        order += re.findall(r"\b([_a-z][_a-z0-9]*)\b", rules[name].split(":", 1)[1])
    return "\n".join(rules[n] for n in _ordered(kind, seen, rules))


def _ordered(kind: str, names: set[str], rules: dict[str, str]) -> list[str]:
    text = "\n".join(rules.values())
    return sorted(names, key=lambda n: (n != kind, text.index(rules[n])))


def _catalogue(info: Any) -> Catalogue | None:
    return next((m for m in _metadata(info.annotation) + info.metadata
                 if isinstance(m, Catalogue)), None)


def _metadata(annotation: Any) -> list[Any]:
    return list(getattr(annotation, "__metadata__", ()))


def _type(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        parts = [_type(a) for a in args]
        return " or ".join(parts) + (" (optional)" if len(args) < len(get_args(annotation))
                                      else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is tuple:
        return "list of " + _type(args[0])
    if _metadata(annotation):
        return _type(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, ir.Node):
        return f"`{annotation.keyword}` ..."
    return {str: "text", int: "whole number", float: "number"}.get(annotation, str(annotation))


def _written(name: str, info: Any) -> str:
    mark = syntax.marker(info.metadata)
    if isinstance(mark, syntax.Arg):
        return "positional" + (", quoted" if mark.quoted else "")
    if isinstance(mark, syntax.Option):
        return " / ".join(f"`{k} ...`" for k in mark.keywords or (name,))
    if isinstance(mark, syntax.Choice):
        return "its value as a keyword"
    subs = [t for t in _node_types(info.annotation)]
    return " / ".join(f"`{t.keyword} ...`" for t in subs) if subs else "-"


def _node_types(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and issubclass(annotation, ir.Node):
        return [annotation]
    return [t for a in get_args(annotation) for t in _node_types(a)]


def _default(info: Any) -> str:
    if info.default is PydanticUndefined:
        return "required"
    return "-" if info.default is None else f"`{info.default}`"


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _doc(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "")


def _fields(cls: type[ir.Node]) -> list[str]:
    rows = ["| field (YAML key) | written | type | default | description |",
            "|---|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        if name in ("kind", "span"):
            continue
        cat = _catalogue(info)
        kind = f"one of the [{cat.what}s](#{_anchor(cat.what + 's')})" if cat else \
            _type(info.annotation)
        rows.append(f"| `{name}` | {_written(name, info)} | {kind} | {_default(info)} | "
                    f"{info.description or ''} |")
    return rows


def _statement(kind: str, rules: dict[str, str]) -> list[str]:
    cls = ir.node_class(kind)
    assert cls is not None, kind
    out = [f"### {cls.keyword}", "", _doc(cls), "", "```lark", _syntax_block(kind, rules),
           "```", "", f"YAML/JSON `kind: {kind}`.", ""]
    out += _fields(cls) + [""]
    for name, info in cls.model_fields.items():
        for sub in _node_types(info.annotation):
            sub_kind = sub.model_fields["kind"].default
            out += [f"`{name}` as `{sub.keyword} ...` (`kind: {sub_kind}`): "
                    + _doc(sub).replace("\n", " "), ""]
    fragment = FRAGMENTS / f"{kind}.md"
    if fragment.is_file():
        out += [fragment.read_text(encoding="utf-8").rstrip(), ""]
    return out


def _catalogues() -> list[str]:
    out = ["## Method catalogues", "",
           "Generated from surgeon/methods/ (`surgeon methods --json` prints the same).", ""]
    for name, c in FAMILIES.items():
        out += [f"### {c.what}s", "", f"Family `{name}`.", "",
                "| name | what it computes | needs | paper |", "|---|---|---|---|"]
        out += [f"| `{m.name}` | {m.summary} | {', '.join(m.needs) or '-'} | "
                f"{m.paper.cite() if m.paper else '-'} |" for m in c]
        out.append("")
    out += ["### statistics", "",
            "The calibration statistics the methods need (surgeon/observers.py), taken on the "
            "graph as it stands when a step runs.", "",
            "| name | watches | what it accumulates |", "|---|---|---|"]
    out += [f"| `{o.name}` | {o.site} | {o.summary} |" for o in OBSERVERS]
    return [*out, ""]


def generate() -> str:
    rules = _rules(_grammar())
    kinds = _statement_kinds(rules)
    keyword = {k: ir.node_class(k).keyword for k in kinds}  # type: ignore[union-attr]
    contents = ["Contents:", "", "1. [Overview](#overview)", "2. [Statements](#statements): "
                + ", ".join(f"[`{w}`](#{_anchor(w)})" for w in keyword.values()),
                "3. [Method catalogues](#method-catalogues)"]
    contents += [f"{i}. [{title}](#{_anchor(title)})"
                 for i, (title, _) in enumerate(_TAIL, 4)]
    out = ["<!-- generated by `python -m surgeon.docgen` from surgeon/ir.py, "
           "grammar/surgery.lark, surgeon/methods/ and docs/language/*.md: edit those -->", "",
           (FRAGMENTS / "intro.md").read_text(encoding="utf-8").rstrip(), "", *contents, "",
           (FRAGMENTS / "overview.md").read_text(encoding="utf-8").rstrip(), "",
           "## Statements", "",
           "Each statement: its grammar rules (lark: `\"...\"` a keyword, STRING a quoted "
           "string, NUMBER, NAME a bare word, `?` optional, `*` repeated, `|` a choice), "
           "its fields as YAML/JSON keys, then the details.", ""]
    for kind in kinds:
        out += _statement(kind, rules)
    out += _catalogues()
    for _, name in _TAIL:
        out += [(FRAGMENTS / f"{name}.md").read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m surgeon.docgen", description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/language.md is stale")
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        stale = not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text
        if stale:
            print(f"{TARGET} is stale: run python -m surgeon.docgen", file=sys.stderr)
        return int(stale)
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
