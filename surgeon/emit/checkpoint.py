"""Reloadable checkpoint: a directory that runs without the spec.

    model.pt2          the compiled program (torch.export archive, raw tensor payloads)
    model.safetensors  its weights; surgeon.load() takes the weights from here
    manifest.json      format, versions, spec text, inputs/outputs, sha256 of every file
    tokenizer files    for text models

`load` never unpickles: it checks every file against the manifest's sha256 and
refuses a .pt2 whose payloads are pickled (torch.export.load would unpickle
them with weights_only=False).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from surgeon import atomic, ir
from surgeon.capture import quiet
from surgeon.diagnostics import UserError
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.report import ArtifactReport

FORMAT = "surgeon-checkpoint"
VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state(gm: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights)
    return {k: v.detach().clone().contiguous() for k, v in gm.state_dict().items()}


@register_emitter(ir.Save)
def save_checkpoint(ctx: EmitContext, out: ir.Save) -> ArtifactReport:
    t0 = time.perf_counter()
    captured, spec_text = ctx.captured, ctx.spec.to_text()
    tokenizer = ctx.loaded.tokenizer if ctx.loaded is not None else None
    ep = captured.reexport()
    buf = io.BytesIO()  # a file name would leak into the archive and break byte-reproducibility
    with quiet():
        torch.export.save(ep, buf)
    with atomic.staged_dir(out.path) as d:
        (d / "model.pt2").write_bytes(buf.getvalue())
        safetensors.torch.save_file(_state(captured.gm), str(d / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(d)
        files = {p.name: _sha256(p) for p in sorted(d.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT, "version": VERSION,
            "torch": torch.__version__.split("+")[0],
            "inputs": [{"name": n, "dims": list(dims)}
                       for n, dims in zip(captured.data.input_names, captured.data.dim_names,
                                          strict=True)],
            "output": captured.output_name,
            "params": captured.num_params(),
            "spec": spec_text,
            "files": files,
        }
        (d / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        total = sum(p.stat().st_size for p in d.iterdir())
        digest = _sha256(d / "manifest.json")
    return ArtifactReport(kind="checkpoint", path=out.path, bytes=total, sha256=digest,
                          seconds=time.perf_counter() - t0)


def _refuse_pickle(pt2: Path) -> None:
    with zipfile.ZipFile(pt2) as z:
        for name in z.namelist():
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                config = json.loads(z.read(name)).get("config", {})
                pickled = [k for k, v in config.items() if v.get("use_pickle")]
                if pickled:
                    raise UserError(f"{pt2}: refusing pickled tensors ({', '.join(pickled[:3])})")
            elif "/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception:  # noqa: BLE001 - anything beyond plain tensors is refused
                    raise UserError(f"{pt2}: refusing sample inputs that need unpickling") from None


def load(path: str | Path) -> nn.Module:
    """Reload a `save` directory as a runnable module (outputs identical to the compile)."""
    d = Path(path)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{d} is not a surgeon checkpoint (manifest.json: {e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{d}: unsupported checkpoint format {manifest.get('format')!r} "
                        f"v{manifest.get('version')}")
    for name, digest in manifest["files"].items():
        if not (d / name).is_file() or _sha256(d / name) != digest:
            raise UserError(f"{d / name} is missing or does not match the manifest's sha256")
    _refuse_pickle(d / "model.pt2")
    with quiet():
        module = torch.export.load(d / "model.pt2").module()
    module.load_state_dict(safetensors.torch.load_file(str(d / "model.safetensors")), strict=True)
    return module
