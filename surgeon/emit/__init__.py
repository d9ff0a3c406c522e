"""Emitters: turn the compiled graph into artifacts (surgeon.emit.registry).

Importing this package registers every emitter; each import below is one output kind.
"""

from surgeon.emit import checkpoint, hf, onnx, peft, report_dir  # noqa: F401
