"""adapter load: insert the LoRA adapters of a PEFT directory.

Reads adapter_config.json and adapter_model.safetensors (never a pickle) as
written by PEFT's save_pretrained, and installs each lora_A/lora_B pair beside
the linear its key names (base_model.model.<path>.lora_A.weight), with PEFT's
scaling alpha/r (alpha/sqrt(r) under use_rslora). Options surgeon cannot
express yet (DoRA, per-module rank or alpha patterns, fan_in_fan_out, trained
biases, modules_to_save) are refused rather than silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from surgeon.passes.adapter import check_free, install

from surgeon.adapters import LoraAdapter, freeze_base
from surgeon.diagnostics import UserError
from surgeon.ir import AdapterLoad
from surgeon.registry import LayerPlan, PassContext, PassResult, register_pass
from surgeon.rewrite import finish
from surgeon.targets import closest

_UNSUPPORTED = {"use_dora": True, "fan_in_fan_out": True}


def read_peft(path: str) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    d = Path(path)
    try:
        config = json.loads((d / "adapter_config.json").read_text())
        tensors = safetensors.torch.load_file(str(d / "adapter_model.safetensors"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"adapter load {path!r}: not a PEFT adapter directory ({e})") from None
    if config.get("peft_type") != "LORA":
        raise UserError(f"adapter load {path!r}: peft_type {config.get('peft_type')!r}; "
                        "only LORA is supported")
    refused = [k for k, v in _UNSUPPORTED.items() if config.get(k) == v]
    refused += [k for k in ("rank_pattern", "alpha_pattern", "modules_to_save")
                if config.get(k)]
    if config.get("bias", "none") != "none":
        refused.append("bias")
    if refused:
        raise UserError(f"adapter load {path!r}: PEFT options not supported yet: "
                        f"{', '.join(refused)}")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        body = key.removeprefix("base_model.model.")
        for part in ("lora_A", "lora_B"):
            if body.endswith(f".{part}.weight"):
                pairs.setdefault(body.removesuffix(f".{part}.weight"), {})[part] = value
    return config, {p: (t["lora_A"], t["lora_B"]) for p, t in pairs.items()}


@register_pass(AdapterLoad)
class AdapterLoadPass:
    name = "adapter_load"

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

    def plan(self, ctx: PassContext, step: AdapterLoad) -> list[LayerPlan]:
        _, pairs, sites = self._read(ctx, step)
        return [LayerPlan(path=p, shape=(sites[p].out_features, sites[p].in_features),
                          rank=a.shape[0], method="lora/peft", params_before=sites[p].params,
                          params_after=sites[p].params + a.numel() + b.numel(),
                          flops_before=2 * sites[p].out_features * sites[p].in_features,
                          flops_after=2 * (sites[p].out_features * sites[p].in_features
                                           + a.numel() + b.numel()))
                for p, (a, b) in sorted(pairs.items())]

    def run(self, ctx: PassContext, step: AdapterLoad) -> PassResult:
        plans = self.plan(ctx, step)  # before installing: the plan checks layers are free
        config, pairs, sites = self._read(ctx, step)
        gm = ctx.captured.gm
        freeze_base(gm)
        for path, (lora_a, lora_b) in sorted(pairs.items()):
            site, rank = sites[path], lora_a.shape[0]
            adapter = LoraAdapter(site.in_features, site.out_features, rank,
                                  float(config["lora_alpha"]), float(config.get("lora_dropout", 0)))
            if config.get("use_rslora"):
                adapter.rslora()
            with torch.no_grad():
                adapter.lora_A.weight.copy_(lora_a)
                adapter.lora_B.weight.copy_(lora_b)
            install(gm, site, adapter, "peft")
        finish(gm)
        return PassResult(modified=bool(pairs), layers=plans)
