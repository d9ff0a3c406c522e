"""`save hf`: a transformers checkpoint for architecture-preserving steps.

Layer pruning keeps the architecture, only with fewer layers: the surviving
layers are renumbered, config.json's num_hidden_layers and every per-layer
list shrink to match, weights are written as safetensors and the tokenizer
files copied. Before the directory is moved into place it is reloaded with
transformers' AutoModel (AutoModelForCausalLM for a causal LM, its logits
compared) and compared with the compiled graph.
"""

from __future__ import annotations

import copy
import re
import time
from collections import defaultdict

import torch

from surgeon import atomic, ir
from surgeon.capture import Captured, CausalLM, TextEncoder, quiet
from surgeon.diagnostics import UserError
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.report import ArtifactReport
from surgeon.sources import LoadedModel

RELOAD_TOLERANCE = 1e-4
_LAYER = re.compile(r"^(.*?)\.(\d+)\.(.*)$")


def _kept_layers(original: dict[str, torch.Tensor], compiled: set[str]) -> dict[str, list[int]]:
    """Per layer list (first numbered segment of a key), the indices the graph still uses."""
    seen: dict[str, set[int]] = defaultdict(set)
    kept: dict[str, set[int]] = defaultdict(set)
    for key in original:
        m = _LAYER.match(key)
        if m:
            seen[m.group(1)].add(int(m.group(2)))
            if key in compiled:
                kept[m.group(1)].add(int(m.group(2)))
    return {p: sorted(kept[p]) for p in seen if kept[p] and kept[p] != seen[p]}


def hf_state(captured: Captured, loaded: LoadedModel) -> tuple[dict[str, torch.Tensor],
                                                                dict[str, list[int]]]:
    """(renumbered state dict, kept indices per pruned layer list)."""
    original = loaded.module.state_dict()
    prefix = captured.prefix
    compiled = {k[len(prefix):]: v for k, v in captured.gm.state_dict().items()
                if k.startswith(prefix)}
    foreign = sorted(k for k in compiled if k not in original)
    if foreign:
        raise UserError("save hf needs architecture-preserving steps; the compiled model has "
                        f"tensors transformers' {type(loaded.module).__name__} cannot hold: "
                        f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}",
                        "use save (surgeon checkpoint) or export onnx for factorized models")
    kept = _kept_layers(original, set(compiled))
    state = {}
    for key, value in original.items():
        m = _LAYER.match(key)
        if m and m.group(1) in kept:
            index = int(m.group(2))
            if index not in kept[m.group(1)]:
                continue
            new_key = f"{m.group(1)}.{kept[m.group(1)].index(index)}.{m.group(3)}"
        else:
            new_key = key
        state[new_key] = compiled.get(key, value).detach().clone()
    return state, kept


def hf_config(config, kept: dict[str, list[int]]):
    cfg = copy.deepcopy(config)
    old = getattr(cfg, "num_hidden_layers", None)
    for indices in kept.values():
        if old is not None and len(indices) < old:
            for name, value in cfg.to_dict().items():
                if isinstance(value, list) and len(value) == old and hasattr(cfg, name):
                    setattr(cfg, name, [value[i] for i in indices])
            cfg.num_hidden_layers = len(indices)
    return cfg


@register_emitter(ir.SaveHF, needs_architecture=True)
def save_hf(ctx: EmitContext, out: ir.SaveHF) -> ArtifactReport:
    t0 = time.perf_counter()
    captured, loaded = ctx.captured, ctx.loaded
    if loaded is None or loaded.source_dir is None or not hasattr(loaded.module, "config"):
        raise UserError("save hf needs a transformers model (model hf or an embedded model)")
    from transformers import AutoModel, AutoModelForCausalLM

    state, kept = hf_state(captured, loaded)
    cfg = hf_config(loaded.module.config, kept)
    model = type(loaded.module)(cfg).eval()
    model.load_state_dict(state, strict=True)
    with atomic.staged_dir(ctx.path(out)) as d, quiet():
        model.save_pretrained(d, safe_serialization=True)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(d)
        auto, entry = (AutoModelForCausalLM, CausalLM) if loaded.causal_lm else \
            (AutoModel, TextEncoder)
        reloaded = auto.from_pretrained(d, local_files_only=True, dtype=model.dtype).eval()
        batch = captured.data.heldout[0]
        with torch.no_grad():
            diff = float((entry(reloaded)(*batch.inputs) - captured.gm(*batch.inputs))
                         .abs().max())
        if not diff <= RELOAD_TOLERANCE:
            raise RuntimeError(f"the transformers checkpoint reloads with outputs {diff:.3g} "
                               f"away from the compiled graph; nothing was written")
        digest, size = atomic.digest(d)
    return ArtifactReport(kind="hf", path=out.path, bytes=size, sha256=digest,
                          reload_max_abs_diff=diff, seconds=time.perf_counter() - t0)
