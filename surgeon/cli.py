"""surgeon command line: check | plan | graph | compile | schema | methods.

Exit codes: 0 ok, 1 internal error (a pass broke), 2 bad input, 3 verify failed.
Every command takes --json and then prints exactly one JSON object on stdout.
check, schema and methods import no torch, transformers or onnx (they answer
at once); the commands that load a model import them when they run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from surgeon.diagnostics import EXIT_USER, PassError, SpecError, UserError, VerifyError
from surgeon.json_safe import dumps

# Piped output gets a fixed wide layout instead of rich's 80-column fallback.
_console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _add_common(p: argparse.ArgumentParser, spec: bool = True) -> None:
    if spec:
        p.add_argument("spec", help="spec file (.surg, .yaml or .json)")
        p.add_argument("--trust-code", action="store_true",
                       help="allow 'model python' to import and run code named by the spec")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _allow_outside(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-outside", action="store_true",
                   help="let the spec write outside its own directory")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="surgeon", description="declarative model surgery")
    sub = ap.add_subparsers(dest="command", required=True)
    k = sub.add_parser("check", help="parse and validate a spec, and where it writes "
                                     "(no model load)")
    _add_common(k)
    _allow_outside(k)
    _add_common(sub.add_parser("plan", help="dry run: targets, ranks, params, FLOPs"))
    _add_common(sub.add_parser("graph", help="the model's linear layers, to write targets"))
    c = sub.add_parser("compile", help="run the passes, verify, write the artifacts")
    _add_common(c)
    _allow_outside(c)
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(sub.add_parser("schema", help="JSON schema of the spec IR"), spec=False)
    _add_common(sub.add_parser("methods", help="the method catalogues, with their papers"),
                spec=False)
    return ap


def _load(path: str):
    from surgeon.parse import load_spec

    return load_spec(path)


def cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.outputs import destinations

    spec = _load(args.spec)
    found = destinations(spec, allow_outside=args.allow_outside)
    if not args.json:
        _console.print(f"{args.spec}: ok ({len(spec.steps)} steps, {len(spec.checks)} checks, "
                       f"{len(spec.outputs)} outputs)")
    return {"ok": True, "spec": spec.model_dump(mode="json"), "canonical": spec.to_text(),
            "writes": [str(d.path) for d in found]}


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.driver import plan_spec
    from surgeon.report import render_plan

    result = plan_spec(_load(args.spec), trust_code=args.trust_code)
    if not args.json:
        render_plan(result["steps"], result["params_before"], _console)
    return result


def cmd_graph(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.driver import capture_spec
    from surgeon.outputs import anchored
    from surgeon.sources import load_model

    spec = _load(args.spec)
    source = anchored(spec)
    _, captured = capture_spec(source, load_model(source.model, args.trust_code))
    sites = captured.linear_sites()
    rows = [{"path": s.path, "out_features": s.out_features, "in_features": s.in_features,
             "bias": s.bias, "params": s.params} for s in sites.values()]
    if not args.json:
        from rich.tree import Tree

        tree = Tree(f"[bold]{spec.model.to_text()}[/] ({captured.num_params():,} params, "
                    f"{len(rows)} linear layers)")
        nodes: dict[str, Tree] = {}
        for r in rows:
            parent, parts = tree, r["path"].split(".")
            for i, part in enumerate(parts[:-1]):
                key = ".".join(parts[: i + 1])
                if key not in nodes:
                    nodes[key] = parent.add(part)
                parent = nodes[key]
            parent.add(f"[cyan]{parts[-1]}[/]  Linear {r['in_features']} → {r['out_features']}"
                       f"{'' if r['bias'] else ' (no bias)'}")
        _console.print(tree)
    return {"params": captured.num_params(), "linears": rows}


def cmd_compile(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.driver import compile_spec
    from surgeon.report import render

    progress = not args.json and not args.quiet and sys.stderr.isatty()
    result = compile_spec(_load(args.spec), trust_code=args.trust_code, progress=progress,
                          allow_outside=args.allow_outside)
    if not args.json:
        render(result.report, _console)
    return result.report.model_dump(mode="json")


def cmd_schema(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.ir import Spec

    schema = Spec.model_json_schema()
    if not args.json:
        _console.print_json(json.dumps(schema))
    return schema


def cmd_methods(args: argparse.Namespace) -> dict[str, Any]:
    from surgeon.methods import FAMILIES

    out = {name: [m.describe() for m in c] for name, c in FAMILIES.items()}
    if not args.json:
        from rich.table import Table

        for name, c in FAMILIES.items():
            t = Table(title=f"{name} ({c.what}s)", title_justify="left")
            for col in ("name", "computes", "needs", "paper"):
                t.add_column(col)
            for m in c:
                t.add_row(m.name, m.summary, ", ".join(m.needs) or "-",
                          m.paper.cite() if m.paper else "-")
            _console.print(t)
    return out


def _error_json(e: Exception, code: int) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type(e).__name__, "message": getattr(e, "message", str(e))}
    if isinstance(e, SpecError):
        err.update(file=e.where.file, line=e.line, column=e.column)
    if isinstance(e, VerifyError):
        err["measured"] = e.measured
    if getattr(e, "hint", None):
        err["hint"] = e.hint
    return {"error": err, "exit_code": code}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _sigterm_raises():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    handler = {"check": cmd_check, "plan": cmd_plan, "graph": cmd_graph,
               "compile": cmd_compile, "schema": cmd_schema,
               "methods": cmd_methods}[args.command]
    try:
        out = handler(args)
    except (UserError, VerifyError, PassError) as e:
        code = getattr(e, "exit_code", EXIT_USER)
        if args.json:
            print(dumps(_error_json(e, code)))
        print(e.format(), file=sys.stderr)  # never wrapped: editors parse file:line:col
        return code
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: say so plainly, trace on request
        if os.environ.get("SURGEON_DEBUG"):
            raise
        if args.json:
            print(dumps(_error_json(e, 1)))
        print(f"internal error: {type(e).__name__}: {e}\n(this is a surgeon bug; rerun with "
              "SURGEON_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        return 1
    if args.json:
        print(dumps(out))
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so staged outputs are cleaned up as for ^C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
