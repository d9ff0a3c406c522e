"""One conformance test over every registered pass, on a tiny residual stack:
plan equals compile (params, FLOPs), onnxruntime runs the ONNX like torch runs the
graph, the same spec and seed give the same bytes, and a refused case exits 2
with a message and no traceback. A new step kind must add its case here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import surgeon
from surgeon import ir
from surgeon.cli import main
from surgeon.ir import SaveAdapters

# kind -> (the steps, steps the compiler must refuse with exit 2); {peft} is a PEFT directory;
# steps starting with @decoder run on a tiny LlamaForCausalLM (for steps that need one)
CASES = {
    "factorize": ('factorize "layers.*.up" rank 4 method svd_llm',
                  'factorize "layers.*.upp" rank 4'),
    "prune_layers": ('prune layers "layers" remove 1 by block_influence',
                     'prune layers "layers" remove 4 by last'),
    "adapter": ('adapter dora "layers.*.{up,down}" rank 2 alpha 4 init pissa',
                'adapter lora "layers.*.up" rank 20 alpha 4 init pissa'),
    "adapter_load": ('adapter load "{peft}"',
                     'adapter load "{peft}"\nadapter load "{peft}"'),
    "fold_norms": ('fold norms', 'fold norms\nsave adapters "x"'),
    "rotate_residual": ('@decoder\nrotate residual hadamard',  # its norms are ones
                        'rotate residual orthogonal'),
    "rotate_heads": ('@decoder\nrotate heads', 'rotate heads'),
    "rotate_inputs": ('rotate inputs "layers.*.down"', 'rotate inputs "layers.*.downn"'),
    "slice_residual": ('@decoder\nslice residual 25%', 'slice residual 25%'),
    "sparsify": ('sparsify "layers.*.*" 40% by wina allocate greedy',
                 'sparsify "layers.*.up" 40% by cats'),
    "kernels": ('factorize "layers.*.up" rank 4 method svd_llm\nsparsify "layers.*.down" 30%\n'
                'kernels triton',  # a fused linear is no linear for later steps:
                'sparsify "layers.*.down" 30%\nkernels triton\nfactorize "layers.*.down" rank 4'),
    "fold": ('adapter lora "layers.*.down" rank 2 alpha 4 init gaussian\nfold',
             'adapter lora "layers.0.down" rank 2 alpha 4\nfold\nsave adapters "x"'),
}
# tests/toy_models.py, importable as tests/ is on sys.path
MODEL = 'model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'


@pytest.fixture(scope="module")
def peft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained-looking LoRA adapters (B != 0) in PEFT's format."""
    result = surgeon.compile(f'{MODEL}calibrate random samples 4\n'
                             'adapter lora "layers.*.up" rank 2 alpha 4\n', trust_code=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in result.module.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("peft") / "adapters"
    result.write([SaveAdapters(path=str(out))])
    return out


def _spec(steps: str, peft: Path, outputs: str = "", decoder: Path | None = None) -> str:
    steps = steps.replace("{peft}", str(peft))
    if steps.startswith("@decoder\n"):
        head = f'model hf "{decoder}"\ncalibrate text builtin samples 16 seqlen 32 seed 3\n'
        return head + steps.removeprefix("@decoder\n") + f"\n{outputs}"
    return f"{MODEL}calibrate random samples 32 seed 3\n{steps}\n{outputs}"


def test_every_registered_step_kind_has_a_case() -> None:
    assert set(CASES) == {cls.model_fields["kind"].default for cls in ir.STEP_TYPES}


@pytest.mark.parametrize("kind", list(CASES))
def test_plan_onnx_and_bytes(kind: str, peft_dir: Path, tmp_path: Path, request) -> None:
    steps, _ = CASES[kind]
    out = tmp_path / "out"
    decoder = request.getfixturevalue("decoder_dir") if steps.startswith("@decoder") else None
    spec = _spec(steps, peft_dir,
                 f'export onnx "{out}/model.onnx"\nsave "{out}/ckpt"\nreport "{out}/report"\n',
                 decoder)
    planned = surgeon.plan(spec, trust_code=True)
    first = surgeon.compile(spec, trust_code=True).report
    assert planned["params_after"] == first.params_after
    for p, c in zip(planned["steps"], first.steps, strict=True):
        assert (p["flops_before"], p["flops_after"]) == (
            sum(lp.flops_before for lp in c.layers), sum(lp.flops_after for lp in c.layers))
        assert p["params_delta"] == c.params_delta and c.modified
    onnx = next(a for a in first.artifacts if a.kind == "onnx")
    assert onnx.ort_max_abs_diff <= 1e-4
    again = surgeon.compile(spec, trust_code=True).report  # writes over the first compile's outputs
    assert [a.sha256 for a in again.artifacts] == [a.sha256 for a in first.artifacts]
    # and on any machine: no absolute source path (stack traces) inside the artifacts
    here = str(Path(surgeon.__file__).resolve().parent.parent).encode()
    for f in (out / "model.onnx", out / "ckpt" / "model.pt2"):
        data = f.read_bytes()
        assert here not in data and b"site-packages" not in data, f


@pytest.mark.parametrize("kind", list(CASES))
def test_refused_case_exits_2(kind: str, peft_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    _, refused = CASES[kind]
    path = tmp_path / "bad.surg"
    path.write_text(_spec(refused, peft_dir))
    assert main(["compile", str(path), "--quiet", "--trust-code"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "internal error" not in err
