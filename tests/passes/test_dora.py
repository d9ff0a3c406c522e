"""DoRA: function-preserving insertion, PEFT's magnitude and gradients, PEFT files
both ways, and exact folding to m * (W + sBA) / ||W + sBA||_row.

On the 2-layer tiny BERT (MiniLM's layout and paths, narrower); PEFT loading our
files onto the original base also runs once on MiniLM itself. Folding and its ONNX
exports run on the toy residual stack (the fold is per linear, not per model)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from outputs import hf, onnx, run
from torch import nn

import surgeon
from surgeon.adapters import DoraAdapter
from surgeon.ir import Adapter, ExportOnnx, Fold, SaveAdapters

peft = pytest.importorskip("peft")

TARGET = "encoder.layer.*.attention.self.{query,value}"
PATH = "encoder.layer.1.attention.self.value"


def _dora(loaded, init: str = "gaussian", dropout: float = 0.0):
    step = Adapter(method="dora", target=TARGET, rank=4, alpha=8, dropout=dropout, init=init)
    return surgeon.apply(loaded.module, [step], tokenizer=loaded.tokenizer)


def _train(result, steps: int = 4) -> None:
    module = result.module
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    batch = result.captured.data.calibration[0]
    target = torch.randn(run(module, batch).shape, generator=torch.Generator().manual_seed(0))
    module.train()
    for _ in range(steps):
        loss = (module(*batch.inputs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


@pytest.mark.parametrize("init", ["zero", "pissa", "eva"])
def test_insertion_preserves_the_function(tiny_bert, init: str) -> None:
    result = _dora(tiny_bert, init, dropout=0.1)
    for batch in result.captured.data.heldout:
        ref = hf(tiny_bert.module, batch)
        assert float((run(result.module, batch) - ref).norm() / ref.norm()) <= 1e-5
    trainable = {n for n, p in result.module.named_parameters() if p.requires_grad}
    assert len(trainable) == 12  # A, B and the magnitude on 2 x 2 layers
    assert sum(n.endswith(".lora_magnitude_vector") for n in trainable) == 4


def test_magnitude_is_peft_dora_initialisation(tiny_bert) -> None:
    result = _dora(tiny_bert)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                             use_dora=True, init_lora_weights="gaussian")
    theirs = peft.get_peft_model(copy.deepcopy(tiny_bert.module), config)
    layer = theirs.base_model.model.get_submodule(PATH)
    ours = result.module.get_submodule(f"model.{PATH}.adapter")
    torch.testing.assert_close(ours.lora_magnitude_vector,
                               layer.lora_magnitude_vector["default"].weight)


def test_gradients_match_peft_dora_layer() -> None:
    """The norm is a constant in backprop (DoRA section 4.3): same grads as PEFT."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(12, 10))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=3, lora_alpha=6, target_modules=["0"], use_dora=True, init_lora_weights="gaussian"))
    layer = theirs.base_model.model[0]
    ours = DoraAdapter(12, 10, 3, 6.0, 0.0)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.1)  # trained: B != 0
        layer.lora_magnitude_vector["default"].weight.mul_(1.3)
        ours.lora_A.weight.copy_(layer.lora_A["default"].weight)
        ours.lora_B.weight.copy_(layer.lora_B["default"].weight)
        ours.lora_magnitude_vector.copy_(layer.lora_magnitude_vector["default"].weight)
    x = torch.randn(5, 12)
    linear = base[0]
    want = theirs(x)
    got = linear(x) + ours(x, linear(x), linear.weight, linear.bias)
    torch.testing.assert_close(got, want)
    want.square().sum().backward()
    got.square().sum().backward()
    for mine, peft_param in ((ours.lora_A.weight, layer.lora_A["default"].weight),
                             (ours.lora_B.weight, layer.lora_B["default"].weight),
                             (ours.lora_magnitude_vector,
                              layer.lora_magnitude_vector["default"].weight)):
        torch.testing.assert_close(mine.grad, peft_param.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("init", "model"), [("gaussian", "minilm"), ("pissa", "tiny_bert")])
def test_peft_loads_our_trained_dora_onto_the_original_base(request, init: str, model: str,
                                                           tmp_path: Path) -> None:
    base = request.getfixturevalue(model)
    result = _dora(base, init, dropout=0.05)
    _train(result)
    result.write([SaveAdapters(path=str(tmp_path / "ad"))])
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base.module), tmp_path / "ad").eval()
    assert model.peft_config["default"].use_dora
    batch = result.captured.data.heldout[0]
    ours = run(result.module, batch)
    assert float((ours - hf(model, batch)).abs().max()) <= 1e-4
    assert float((ours - hf(base.module, batch)).abs().max()) > 1e-3  # training moved it


def test_peft_dora_loads_here_and_saves_back(tiny_bert, bert_dir: Path, tmp_path: Path) -> None:
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"],
                             use_dora=True, init_lora_weights="gaussian")
    theirs = peft.get_peft_model(copy.deepcopy(tiny_bert.module), config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name or "lora_magnitude_vector" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)  # as if trained
    theirs.save_pretrained(tmp_path / "in")
    result = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "in"}"\n'
                             f'save adapters "{tmp_path / "out"}"\n')
    assert {lp.method for lp in result.report.steps[0].layers} == {"dora/peft"}
    again = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_bert.module),
                                           tmp_path / "out").eval()
    theirs.eval()
    for batch in result.captured.data.heldout:
        want = hf(theirs, batch)
        torch.testing.assert_close(run(result.module, batch), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hf(again, batch), want, atol=1e-5, rtol=1e-5)


def test_fold_is_the_closed_form_and_exports_like_the_unfolded_graph(tmp_path: Path) -> None:
    from toy_models import tiny_stack

    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    step = Adapter(method="dora", target="layers.*.{up,down}", rank=4, alpha=8, init="gaussian")
    result = surgeon.apply(tiny_stack(), [step], example_inputs=(x,), dim_names=(("batch", None),))
    _train(result, steps=3)
    path = "layers.2.down"
    ad = result.module.get_submodule(f"{path}.adapter")
    w = result.module.get_parameter(f"{path}.weight").detach().double().numpy()
    a, b = (t.detach().double().numpy() for t in (ad.lora_A.weight, ad.lora_B.weight))
    m = ad.lora_magnitude_vector.detach().double().numpy()
    direction = w + ad.scaling * b @ a
    expected = m[:, None] * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    batch = result.captured.data.heldout[0]
    unfolded = run(result.module, batch)
    result.write([ExportOnnx(path=str(tmp_path / "unfolded.onnx"))])
    result.apply([Fold()])
    assert not any(".adapter." in n for n, _ in result.module.named_parameters())
    folded_w = result.module.get_parameter(f"{path}.weight").detach().double().numpy()
    np.testing.assert_allclose(folded_w, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run(result.module, batch), unfolded, atol=1e-5, rtol=1e-5)
    result.write([ExportOnnx(path=str(tmp_path / "folded.onnx"))])
    outs = [onnx(tmp_path / f"{k}.onnx", batch) for k in ("unfolded", "folded")]
    assert abs(outs[0] - outs[1]).max() <= 1e-4
    assert abs(outs[0] - unfolded.numpy()).max() <= 1e-4
