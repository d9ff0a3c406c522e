"""`save adapters "dir"`: PEFT's LoRA files, loadable with
PeftModel.from_pretrained(original_base_model, dir).

Keys follow PEFT: base_model.model.<module path>.lora_{A,B}.weight. A PiSSA
adapter changed its base weight (the residual), so it is saved as the
equivalent LoRA on the original base, as PEFT's pissa-to-lora conversion does:
A' = [A; A0], B' = [B, -B0], with r and alpha doubled (same alpha/r), since
W_res + s B A = W + s (B A - B0 A0). That sum is all DoRA's norm sees, so a DoRA
magnitude vector carries over unchanged. Adapters of different rank or alpha
(EVA's redistribution, PiSSA beside LoRA) go into rank_pattern/alpha_pattern.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import safetensors.torch
import torch

from surgeon import atomic, ir
from surgeon.adapters import ADAPTER_META, DoraAdapter, LoraAdapter, adapter_nodes
from surgeon.capture import Captured
from surgeon.diagnostics import UserError
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.report import ArtifactReport


def peft_tensors(captured: Captured, causal_lm: bool = False
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    gm, prefix = captured.gm, captured.prefix
    modules = sorted({n.meta[ADAPTER_META]["module"] for n in adapter_nodes(gm)})
    if not modules:
        raise UserError("save adapters: the compiled model has no adapters (is there an "
                        "'adapter' step, and no 'fold' after it?)")
    adapters = {m.removesuffix(".adapter").removeprefix(prefix): gm.get_submodule(m)
                for m in modules}
    dropout, rslora, dora = _shared(adapters)
    tensors, ranks, alphas = {}, {}, {}
    for path, a in adapters.items():
        lora_a, lora_b = a.lora_A.weight.detach(), a.lora_B.weight.detach()
        ranks[path], alphas[path] = a.rank, a.alpha
        if hasattr(a, "init_A"):  # PiSSA: the equivalent adapter on the original base
            if rslora:
                raise UserError("save adapters: PiSSA with rslora scaling has no PEFT "
                                "equivalent")
            lora_a = torch.cat([lora_a, a.init_A])
            lora_b = torch.cat([lora_b, -a.init_B], dim=1)
            ranks[path], alphas[path] = 2 * a.rank, 2 * a.alpha  # same alpha / r
        key = f"base_model.model.{path}"
        tensors[f"{key}.lora_A.weight"] = lora_a.contiguous().clone()
        tensors[f"{key}.lora_B.weight"] = lora_b.contiguous().clone()
        if isinstance(a, DoraAdapter):
            tensors[f"{key}.lora_magnitude_vector"] = a.lora_magnitude_vector.detach().clone()
    rank, rank_pattern = _pattern(ranks)
    alpha, alpha_pattern = _pattern(alphas)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if causal_lm else None, "r": rank, "lora_alpha": alpha,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "lora_dropout": dropout, "target_modules": sorted(adapters), "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "use_dora": dora,
        "use_rslora": rslora, "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": None,
    }
    return tensors, config


def _shared(adapters: dict[str, LoraAdapter]) -> tuple[float, bool, bool]:
    """(dropout, rslora, dora): one value each in a PEFT config; refuse a mix."""
    values = {}
    for name, get in (("dropout", lambda a: float(getattr(a.dropout, "p", 0.0))),
                      ("rslora scaling", lambda a: a.use_rslora),
                      ("DoRA", lambda a: isinstance(a, DoraAdapter))):
        seen = {get(a) for a in adapters.values()}
        if len(seen) > 1:
            raise UserError(f"save adapters: the adapters mix {name} settings; PEFT's config "
                            "holds one for all", "save each kind with its own compile")
        values[name] = seen.pop()
    return values["dropout"], values["rslora scaling"], values["DoRA"]


def _pattern(values: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The most common value as the default, the others as PEFT's per-module pattern
    (keys are full module paths; PEFT matches them as `(.*\\.)?<key>$`)."""
    default = Counter(values.values()).most_common(1)[0][0]
    return default, {p: v for p, v in values.items() if v != default}


@register_emitter(ir.SaveAdapters, needs_adapters=True)
def save_adapters(ctx: EmitContext, out: ir.SaveAdapters) -> ArtifactReport:
    t0 = time.perf_counter()
    tensors, config = peft_tensors(ctx.captured, bool(ctx.loaded and ctx.loaded.causal_lm))
    with atomic.staged_dir(ctx.path(out)) as d:
        safetensors.torch.save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        digest, size = atomic.digest(d)
    return ArtifactReport(kind="adapters", path=out.path, bytes=size, sha256=digest,
                          seconds=time.perf_counter() - t0)
