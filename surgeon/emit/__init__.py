"""Emitters: turn the compiled graph into artifacts (ONNX, reloadable checkpoint)."""
