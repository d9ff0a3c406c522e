"""Import structure: no cycles between surgeon's modules (function-level imports
included), and the parse-only commands start without torch, transformers or onnx."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent
# where each surgeon package lives in the tree (pyproject's package-dir)
ROOTS = {"surgeon": REPO / "surgeon", "surgeon.passes": REPO / "passes",
         "surgeon.kernels": REPO / "kernels", "surgeon.grammar": REPO / "grammar"}
HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "numpy")


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            if not (package == "surgeon" and parts[0] in ("passes", "kernels", "grammar")):
                found[name] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of ours this file imports anywhere in it (inside functions too).
    `from pkg import mod` counts as importing pkg.mod; the implicit import of a
    submodule's parent packages is not an edge (every package would be in a cycle)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_is_acyclic() -> None:
    modules = _modules()
    graph = {n: _imports(p, n, set(modules)) for n, p in modules.items()}
    assert len(graph) > 30 and graph["surgeon.driver"]  # the scan sees the tree
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_parse_only_commands_import_no_heavy_package(tmp_path: Path) -> None:
    spec = tmp_path / "s.surg"
    spec.write_text('model "minilm"\nfactorize "**.query" rank 8 method svd_llm\n'
                    'verify cosine >= 0.9\nsave "out"\n')
    code = ("import sys; from surgeon.cli import main\n"
            "for argv in (['check', sys.argv[1], '--json'], ['schema', '--json'], "
            "['methods', '--json']):\n"
            "    assert main(argv) == 0, argv\n"
            "import surgeon, surgeon.docgen\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"



def test_the_kernels_directory_never_shadows_hugging_faces_kernels() -> None:
    """From the repository root, kernels/ is importable as top-level `kernels`, the name
    of the kernel-hub package transformers imports; that import must get the installed
    package, whichever is imported first, and fail as if kernels/ were not there when
    no such package is on the path (-S drops site-packages)."""
    import importlib.metadata

    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        theirs = "raise SystemExit(0)\n"  # nothing to shadow here; the -S case still runs
    else:
        theirs = "assert 'site-packages' in kernels.__file__, kernels.__file__\n"
    for code in ("import surgeon.kernels\ntry: import kernels\nexcept ImportError: pass\n"
                 + theirs + "from transformers import AutoModelForCausalLM\n",
                 "try: import kernels\nexcept ImportError: pass\n" + theirs
                 + "import surgeon.kernels\nassert surgeon.kernels.ONNX_LOWERINGS\n"):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-S", "-c", "import kernels"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert "ModuleNotFoundError: No module named 'kernels'" in out.stderr, out.stderr
