"""Kernels behind torch.library custom ops (surgeon.kernels), one file per op: the op (what
torch.export captures as one opaque node), its fake (shapes for export), a pure-torch
reference that CPU runs, and an ONNX lowering to standard ops. Triton stays optional.

Importing this package registers every op; ONNX_LOWERINGS maps each op to its lowering
(the ONNX emitter's custom_translation_table).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _hand_over_the_name() -> None:
    """Run from the repository root (`python -m pytest`, `python -c`), this directory is
    also importable as top-level `kernels`, which is Hugging Face's kernel-hub package that
    transformers imports when it is installed. Load that one in our place (the import
    system returns whatever sys.modules holds once this file has run), or fail as if we
    were not here."""
    root = Path(__file__).resolve().parent.parent
    path = [p for p in sys.path if Path(p or ".").resolve() != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("No module named 'kernels'", name="kernels")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


if __name__ == "kernels":
    _hand_over_the_name()
else:
    from surgeon.kernels import hadamard, lowrank_linear, sparse_linear, sparsify, sparsify_topk

    ONNX_LOWERINGS: dict[Any, Callable[..., Any]] = {
        hadamard.OP: hadamard.onnx_lowering, sparsify.OP: sparsify.onnx_lowering,
        sparsify_topk.OP: sparsify_topk.onnx_lowering,
        sparse_linear.OP: sparse_linear.onnx_lowering,
        lowrank_linear.OP: lowrank_linear.onnx_lowering}
    # ops whose output jumps where an input crosses a threshold (the parity checks of
    # artifacts must allow for entries rounding differently on either side of it)
    DISCONTINUOUS_OPS = frozenset({sparsify.OP, sparsify_topk.OP, sparse_linear.OP})
