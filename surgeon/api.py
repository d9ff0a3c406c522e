"""Python API: the same passes as the CLI, on specs or on IR steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon import ir
from surgeon.capture import capture, entry_point
from surgeon.corpus import Batch, CalibrationData, text_data
from surgeon.driver import CompileResult, compile_spec, plan_spec, run_passes
from surgeon.emit.checkpoint import load as load_checkpoint
from surgeon.parse import load_spec, parse_spec
from surgeon.report import CompileReport
from surgeon.sources import EMBEDDED_CORPUS, LoadedModel, embedded_model_dir, is_causal_module
from surgeon.verify import fidelity


def as_spec(spec: ir.Spec | str | Path) -> ir.Spec:
    """A Spec, a path to a .surg/.yaml/.json file, or spec text."""
    if isinstance(spec, ir.Spec):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec
                                  and Path(spec).suffix in (".surg", ".yaml", ".yml", ".json")):
        return load_spec(spec)
    return parse_spec(spec)


def _tokenizer_for(src: ir.ModelSource) -> Any | None:
    if src.source == "python":
        return None
    from transformers import AutoTokenizer

    d = embedded_model_dir(src.ref) if src.source == "embedded" else Path(src.ref)
    return AutoTokenizer.from_pretrained(d, local_files_only=True)


def compile(spec: ir.Spec | str | Path, model: nn.Module | None = None, *,  # noqa: A001
            trust_code: bool = False, progress: bool = False,
            allow_outside: bool | None = None) -> CompileResult:
    """Compile a spec. `model` replaces the spec's model (same architecture expected).

    A spec file writes only inside its own directory unless allow_outside=True; spec
    text and Spec objects (the caller wrote them) may write anywhere unless
    allow_outside=False. Neither ever replaces data surgeon did not write."""
    spec = as_spec(spec)
    if allow_outside is None:
        allow_outside = spec.source_file is None
    loaded = None
    if model is not None:
        tokenizer = None if spec.inputs else _tokenizer_for(spec.model)
        max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        corpus = EMBEDDED_CORPUS.get(spec.model.ref, "sentences") \
            if spec.model.source == "embedded" else "sentences"
        loaded = LoadedModel(model.eval(), tokenizer, None, max_pos,
                             tokenizer is not None and is_causal_module(model), corpus)
    return compile_spec(spec, loaded, trust_code=trust_code, progress=progress,
                        allow_outside=allow_outside)


def plan(spec: ir.Spec | str | Path, *, trust_code: bool = False) -> dict[str, Any]:
    return plan_spec(as_spec(spec), trust_code=trust_code)


def apply(model: nn.Module, steps: Sequence[Any], *,
          example_inputs: tuple[torch.Tensor, ...] | None = None, tokenizer: Any = None,
          dim_names: tuple[tuple[str | None, ...], ...] | None = None) -> CompileResult:
    """Run IR steps on a model without a spec.

    Text models: pass `tokenizer` (inputs come from the built-in corpus).
    Others: pass `example_inputs` and optionally `dim_names` per input and axis
    ("batch", "seq", ... for dynamic axes; None for static ones).
    """
    if tokenizer is not None:
        max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        data = text_data(tokenizer, ir.Calibrate(), max_pos)
    elif example_inputs is not None:
        names = dim_names or tuple((None,) * t.dim() for t in example_inputs)
        named = {n for axes in names for n in axes if n}
        data = CalibrationData(
            input_names=tuple(f"input_{i}" for i in range(len(example_inputs))),
            calibration=[Batch(example_inputs, None)], heldout=[Batch(example_inputs, None)],
            example=example_inputs, dims={n: (1 if n == "batch" else 2, None) for n in named},
            dim_names=names)
    else:
        raise ValueError("apply() needs a tokenizer (text models) or example_inputs")
    causal = tokenizer is not None and is_causal_module(model)
    entry, prefix, output_name = entry_point(model, tokenizer is not None, causal)
    captured = capture(entry, data, prefix, output_name)
    report = CompileReport(params_before=captured.num_params(), params_after=captured.num_params())
    run_passes(captured, tuple(steps), report)
    report.fidelity = fidelity(entry, captured.gm, data.heldout, output_name)
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    loaded = LoadedModel(model, tokenizer, None, max_pos, causal)
    return CompileResult(captured.gm, report, captured, None, loaded)


def load(path: str | Path) -> nn.Module:
    """Reload a directory written by `save`; runs without the spec."""
    return load_checkpoint(path)
