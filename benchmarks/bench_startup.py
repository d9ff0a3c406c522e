"""Wall time of the commands that must answer at once: `surgeon --help`, `surgeon check`,
`surgeon schema` and `surgeon methods` (median of N runs, fresh processes), and which
heavy packages each imported.

    python benchmarks/bench_startup.py [--runs 9] [--pythonpath DIR]

--pythonpath runs another checkout (e.g. a worktree of an older commit) for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = Path(__file__).resolve().parent.parent / "specs" / "minilm.surg"
COMMANDS = {"--help": ["--help"], "check": ["check", str(SPEC)], "schema": ["schema", "--json"],
            "methods": ["methods", "--json"]}
PROBE = ("import sys, runpy; sys.argv = ['surgeon', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('surgeon.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "heavy = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]\n"
         "print('HEAVY', ','.join(heavy) or '-', file=sys.stderr)")


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    # run outside the checkout, so PYTHONPATH (or the installed package) decides what loads
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True,
                         text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    heavy = [ln.split(" ", 1)[1] for ln in out.stderr.splitlines() if ln.startswith("HEAVY ")]
    return seconds, heavy[-1] if heavy else "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--pythonpath", help="import surgeon from this directory instead")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    print("| command | median wall (s) | min (s) | heavy imports |")
    print("|---|---|---|---|")
    for name, argv in COMMANDS.items():
        runs = [wall(argv, env) for _ in range(args.runs)]
        times = [t for t, _ in runs]
        print(f"| surgeon {name} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{runs[-1][1]} |")
    probe = subprocess.run([sys.executable, "-c", "import surgeon; print(surgeon.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    print(f"\nsurgeon from {probe.stdout.strip()}")


if __name__ == "__main__":
    main()
