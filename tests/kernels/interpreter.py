"""Run a snippet under Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before
Triton compiles anything, so in a fresh process) and return the JSON it prints last;
tests that need it are skipped where Triton is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


def run_interpreted(code: str, timeout: int = 600):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=timeout, cwd=REPO / "tests")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_cases(results: list[dict], count: int, tolerance: dict[str, float],
                 *flags: str) -> None:
    """Every case ran, its relative error is within its dtype's tolerance, and each named
    flag holds."""
    assert len(results) == count
    for r in results:
        assert r["err"] <= tolerance[r["dtype"]], r
        assert all(r[f] for f in flags), r
