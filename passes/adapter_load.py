"""adapter load: insert the LoRA adapters of a PEFT directory.

Reads adapter_config.json and adapter_model.safetensors (never a pickle) as
written by PEFT's save_pretrained, and installs each lora_A/lora_B pair beside
the linear its key names (base_model.model.<path>.lora_A.weight), with PEFT's
scaling alpha/r (alpha/sqrt(r) under use_rslora), per-module rank and alpha
from rank_pattern/alpha_pattern, and DoRA's lora_magnitude_vector. Options
surgeon cannot express yet (fan_in_fan_out, trained biases, modules_to_save,
...) are refused rather than silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from surgeon.adapters import DoraAdapter, LoraAdapter, check_free, freeze_base, install, layer_plan
from surgeon.capture import LinearSite
from surgeon.diagnostics import UserError
from surgeon.finite import nonfinite
from surgeon.ir import AdapterLoad
from surgeon.registry import LayerPlan, Pass, PassContext, PassResult, register_pass
from surgeon.rewrite import finish
from surgeon.targets import closest

_UNSUPPORTED = {"fan_in_fan_out": True, "lora_bias": True, "use_qalora": True}


@dataclass(frozen=True)
class PeftLayer:
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    alpha: float
    magnitude: torch.Tensor | None  # DoRA


def read_peft(path: str) -> tuple[dict, dict[str, PeftLayer]]:
    d = Path(path)
    try:
        config = json.loads((d / "adapter_config.json").read_text())
        tensors = safetensors.torch.load_file(str(d / "adapter_model.safetensors"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"adapter load {path!r}: not a PEFT adapter directory ({e})") from None
    bad = nonfinite(tensors.items())
    if bad:
        raise UserError(f"adapter load {path!r}: NaN or infinite values in {', '.join(bad)}")
    if not isinstance(config, dict):
        raise UserError(f"adapter load {path!r}: adapter_config.json is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise UserError(f"adapter load {path!r}: peft_type {config.get('peft_type')!r}; "
                        "only LORA is supported")
    refused = [k for k, v in _UNSUPPORTED.items() if config.get(k) == v]
    refused += [k for k in ("modules_to_save", "layer_replication", "target_parameters")
                if config.get(k)]
    if config.get("bias", "none") != "none":
        refused.append("bias")
    if refused:
        raise UserError(f"adapter load {path!r}: PEFT options not supported yet: "
                        f"{', '.join(refused)}")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        body = key.removeprefix("base_model.model.")
        for part in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"):
            if body.endswith(f".{part}"):
                parts.setdefault(body.removesuffix(f".{part}"), {})[part] = value
    return config, {p: _layer(path, config, p, t) for p, t in parts.items()}


def _layer(where: str, config: dict, path: str, t: dict[str, torch.Tensor]) -> PeftLayer:
    if "lora_A.weight" not in t or "lora_B.weight" not in t:
        raise UserError(f"adapter load {where!r}: {path} lacks lora_A or lora_B")
    # absent keys take LoraConfig's defaults, as PeftModel.from_pretrained does
    rank = _pattern_value(config.get("rank_pattern") or {}, path, config.get("r", 8))
    if t["lora_A.weight"].shape[0] != rank:
        raise UserError(f"adapter load {where!r}: {path} has rank "
                        f"{t['lora_A.weight'].shape[0]}, its config says {rank}")
    if bool(config.get("use_dora")) != ("lora_magnitude_vector" in t):
        raise UserError(f"adapter load {where!r}: {path}'s DoRA magnitude does not match "
                        f"use_dora={config.get('use_dora')}")
    alpha = _pattern_value(config.get("alpha_pattern") or {}, path, config.get("lora_alpha", 8))
    return PeftLayer(t["lora_A.weight"], t["lora_B.weight"], float(alpha),
                     t.get("lora_magnitude_vector"))


def _pattern_value(patterns: dict[str, float], path: str, default: float) -> float:
    """PEFT's rule (peft.utils.other.get_pattern_key): the first key matching as a
    regex suffix of the module path at a dot boundary."""
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({key})$", path):
                return value
        except re.error as e:
            raise UserError(f"adapter load: pattern {key!r} is not a valid regex ({e})") from None
    return default


@register_pass(AdapterLoad)
class AdapterLoadPass(Pass):
    name = "adapter_load"
    preserves_architecture = False
    adapters = "add"  # trained adapters change the function: statistics go stale

    def _read(self, ctx: PassContext, step: AdapterLoad):
        config, pairs = read_peft(step.path)
        sites = ctx.captured.linear_sites()
        for path in pairs:
            if path in sites:
                check_free(ctx.captured.gm, sites[path])
        missing = [p for p in pairs if p not in sites]
        if missing:
            near = closest(missing[0], sites)
            raise UserError(f"adapter load {step.path!r}: {missing[0]!r} is not a linear layer "
                            "of this model", f"closest: {', '.join(near[:3])}" if near else None)
        return config, pairs, sites

    def run(self, ctx: PassContext, step: AdapterLoad) -> PassResult:
        config, pairs, sites = self._read(ctx, step)  # checks the layers are free
        plans = [_layer_plan(sites[p], layer) for p, layer in sorted(pairs.items())]
        gm = ctx.captured.gm
        freeze_base(gm)
        for path, layer in sorted(pairs.items()):
            site = sites[path]
            kind = LoraAdapter if layer.magnitude is None else DoraAdapter
            adapter = kind(site.in_features, site.out_features, layer.lora_a.shape[0],
                           layer.alpha, float(config.get("lora_dropout", 0)))
            if config.get("use_rslora"):
                adapter.rslora()
            with torch.no_grad():
                adapter.lora_A.weight.copy_(layer.lora_a)
                adapter.lora_B.weight.copy_(layer.lora_b)
                if isinstance(adapter, DoraAdapter):
                    adapter.lora_magnitude_vector.copy_(layer.magnitude)
            weight = gm.get_parameter(site.weight)
            install(gm, site, adapter.to(device=weight.device, dtype=weight.dtype), "peft")
        finish(gm)
        return PassResult(modified=bool(pairs), layers=plans)


def _layer_plan(site: LinearSite, layer: PeftLayer) -> LayerPlan:
    extra = layer.lora_a.numel() + layer.lora_b.numel()
    extra += 0 if layer.magnitude is None else layer.magnitude.numel()
    return layer_plan(site, layer.lora_a.shape[0], extra,
                      "lora/peft" if layer.magnitude is None else "dora/peft")
