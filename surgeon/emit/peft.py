"""`save adapters "dir"`: PEFT's LoRA files, loadable with
PeftModel.from_pretrained(original_base_model, dir).

Keys follow PEFT: base_model.model.<module path>.lora_{A,B}.weight. A PiSSA
adapter changed its base weight (the residual), so it is saved as the
equivalent LoRA on the original base, as PEFT's pissa-to-lora conversion does:
A' = [A; A0], B' = [B, -B0], with r and alpha doubled (same alpha/r), since
W_res + s B A = W + s (B A - B0 A0).
"""

from __future__ import annotations

import json
import time

import safetensors.torch
import torch

from surgeon import atomic, ir
from surgeon.adapters import ADAPTER_META, adapter_nodes
from surgeon.capture import Captured
from surgeon.diagnostics import UserError
from surgeon.report import ArtifactReport


def peft_tensors(captured: Captured) -> tuple[dict[str, torch.Tensor], dict]:
    gm, prefix = captured.gm, captured.prefix
    modules = sorted({n.meta[ADAPTER_META]["module"] for n in adapter_nodes(gm)})
    if not modules:
        raise UserError("save adapters: the compiled model has no adapters (is there an "
                        "'adapter' step, and no 'fold' after it?)")
    adapters = {m: gm.get_submodule(m) for m in modules}
    shapes = {(a.rank, a.alpha, float(getattr(a.dropout, "p", 0.0)), hasattr(a, "init_A"),
               a.use_rslora) for a in adapters.values()}
    if len(shapes) > 1:
        raise UserError("save adapters: all adapters must share rank, alpha, dropout and init "
                        "(PEFT's config holds one of each)")
    rank, alpha, dropout, converted, rslora = shapes.pop()
    if converted and rslora:
        raise UserError("save adapters: PiSSA with rslora scaling has no PEFT equivalent")
    tensors, targets = {}, []
    for module, a in adapters.items():
        path = module.removesuffix(".adapter").removeprefix(prefix)
        targets.append(path)
        lora_a, lora_b = a.lora_A.weight.detach(), a.lora_B.weight.detach()
        if converted:
            lora_a = torch.cat([lora_a, a.init_A])
            lora_b = torch.cat([lora_b, -a.init_B], dim=1)
        tensors[f"base_model.model.{path}.lora_A.weight"] = lora_a.contiguous().clone()
        tensors[f"base_model.model.{path}.lora_B.weight"] = lora_b.contiguous().clone()
    factor = 2 if converted else 1
    config = {
        "peft_type": "LORA", "task_type": None, "r": rank * factor,
        "lora_alpha": alpha * factor, "lora_dropout": dropout, "target_modules": targets,
        "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
        "use_dora": False, "use_rslora": rslora, "modules_to_save": None,
        "inference_mode": True, "base_model_name_or_path": None,
    }
    return tensors, config


def save_adapters(captured: Captured, out: ir.SaveAdapters) -> ArtifactReport:
    t0 = time.perf_counter()
    tensors, config = peft_tensors(captured)
    with atomic.staged_dir(out.path) as d:
        safetensors.torch.save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        digest, size = atomic.digest(d)
    return ArtifactReport(kind="adapters", path=out.path, bytes=size, sha256=digest,
                          seconds=time.perf_counter() - t0)
