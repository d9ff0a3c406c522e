"""JSON that is always valid: non-finite floats become null. Torch-free, so the CLI's
--json output and the reports share it."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """`obj` (dicts, lists, tuples, scalars) with every NaN or infinite float replaced by
    None, so `json.dumps(..., allow_nan=False)` accepts it: non-finite numbers become
    JSON null (not strings: a consumer reading a number field gets null or a number)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps that never writes NaN or Infinity (anything else unknown as str)."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kwargs)
