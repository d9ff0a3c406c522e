"""surgeon: a declarative model-surgery compiler.

spec text -> IR (surgeon.ir) -> torch.export graph (surgeon.capture)
-> passes (surgeon.passes) -> verify (surgeon.verify) -> ONNX / checkpoint (surgeon.emit)

The compiler entry points import torch; they load on first use (PEP 562), so
`import surgeon` and the CLI's parse-only commands start at once.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Spec", "__version__", "apply", "compile", "load", "load_spec", "parse_spec", "plan"]

_LAZY = {"apply": "surgeon.api", "compile": "surgeon.api", "load": "surgeon.api",
         "plan": "surgeon.api", "Spec": "surgeon.ir", "parse_spec": "surgeon.parse",
         "load_spec": "surgeon.parse"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'surgeon' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
