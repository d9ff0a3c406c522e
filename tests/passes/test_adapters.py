"""Adapters: function-preserving insertion (LoRA, PiSSA), PiSSA against PEFT's
own initialisation, training with a plain optimizer, exact folding, and PEFT
files that PeftModel loads onto the original base with identical outputs.

On the 2-layer tiny BERT (MiniLM's layout and paths, narrower); PEFT loading our
files onto the original base also runs once on MiniLM itself. Folding with ONNX
exports and the statement rules run on the toy residual stack."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from outputs import hf, onnx, run

import surgeon
from surgeon.ir import Adapter, ExportOnnx, Fold, SaveAdapters

peft = pytest.importorskip("peft")

TARGET = "encoder.layer.*.attention.self.{query,value}"


def _adapted(loaded, init: str, dropout: float = 0.0):
    step = Adapter(target=TARGET, rank=4, alpha=8, dropout=dropout, init=init)
    return surgeon.apply(loaded.module, [step], tokenizer=loaded.tokenizer)


def _stack(steps):
    """The steps on the toy residual stack (a fresh one each time), batch of 16."""
    from toy_models import tiny_stack

    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    return surgeon.apply(tiny_stack(), steps, example_inputs=(x,), dim_names=(("batch", None),))


@pytest.mark.parametrize("init", ["zero", "gaussian", "pissa"])
def test_insertion_preserves_the_function(tiny_bert, init: str) -> None:
    result = _adapted(tiny_bert, init, dropout=0.1)  # eval mode: dropout off
    for batch in result.captured.data.heldout:
        ref = hf(tiny_bert.module, batch)
        rel = float((run(result.module, batch) - ref).norm() / ref.norm())
        assert rel <= 1e-5, init
    trainable = {n for n, p in result.module.named_parameters() if p.requires_grad}
    assert len(trainable) == 8 and all(".adapter.lora_" in n for n in trainable)  # 2 x 2 x A, B


def test_pissa_matches_peft_initialisation(tiny_bert) -> None:
    result = _adapted(tiny_bert, "pissa")
    base = copy.deepcopy(tiny_bert.module)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                             init_lora_weights="pissa")
    theirs = peft.get_peft_model(base, config)
    path = "encoder.layer.1.attention.self.query"
    ours = result.module.get_submodule(f"model.{path}.adapter")
    layer = theirs.base_model.model.get_submodule(path)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    signs = torch.sign((ours.lora_A.weight * a).sum(1))  # singular vectors: up to sign
    # PEFT takes the SVD in float32, we in float64: agreement to float32 SVD accuracy
    torch.testing.assert_close(ours.lora_A.weight, signs[:, None] * a, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(ours.lora_B.weight, b * signs[None, :], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(result.module.get_parameter(f"model.{path}.weight"),
                               layer.base_layer.weight, atol=1e-4, rtol=1e-3)


def _train(result, steps: int = 5) -> list[float]:
    module = result.module
    params = [p for p in module.parameters() if p.requires_grad]
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch = result.captured.data.calibration[0]
    target = torch.randn(run(module, batch).shape, generator=torch.Generator().manual_seed(0))
    module.train()
    losses = []
    for _ in range(steps):
        loss = (module(*batch.inputs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    for n, p in module.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"base weight {n} moved"
    return losses


@pytest.mark.parametrize(("init", "model"), [("zero", "minilm"), ("pissa", "tiny_bert")])
def test_peft_loads_our_trained_adapters_onto_the_original_base(request, init: str, model: str,
                                                               tmp_path: Path) -> None:
    base = request.getfixturevalue(model)
    result = _adapted(base, init, dropout=0.05)
    losses = _train(result)
    assert losses[-1] < losses[0]
    result.write([SaveAdapters(path=str(tmp_path / "ad"))])
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base.module), tmp_path / "ad").eval()
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        theirs = model(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).last_hidden_state
    ours = run(result.module, batch)
    assert float((ours - theirs).abs().max()) <= 1e-4
    assert float((ours - hf(base.module, batch)).abs().max()) > 1e-3  # training did something


def test_fold_is_exact_and_exports_like_the_unfolded_graph(tmp_path: Path) -> None:
    result = _stack([Adapter(target="layers.*.{up,down}", rank=4, alpha=8, init="gaussian")])
    _train(result, steps=3)
    batch = result.captured.data.heldout[0]
    unfolded = run(result.module, batch)
    result.write([ExportOnnx(path=str(tmp_path / "unfolded.onnx"))])
    result.apply([Fold()])
    assert not any(".adapter." in n for n, _ in result.module.named_parameters())
    folded = run(result.module, batch)
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=1e-5)
    result.write([ExportOnnx(path=str(tmp_path / "folded.onnx"))])
    outs = [onnx(tmp_path / f"{k}.onnx", batch) for k in ("unfolded", "folded")]
    assert abs(outs[0] - outs[1]).max() <= 1e-4
    assert abs(outs[1] - unfolded.numpy()).max() <= 1e-4


def test_peft_adapters_load_here_with_identical_outputs(tiny_bert, bert_dir: Path,
                                                        tmp_path: Path) -> None:
    base = copy.deepcopy(tiny_bert.module)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"],
                             init_lora_weights="gaussian")
    theirs = peft.get_peft_model(base, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # as if trained: B != 0
    theirs.save_pretrained(tmp_path / "peft")
    result = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "peft"}"\n')
    assert len(result.report.steps[0].targets) == 4
    theirs.eval()
    for batch in result.captured.data.heldout:
        with torch.no_grad():
            want = theirs(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
        torch.testing.assert_close(run(result.module, batch), want.last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
    assert float((run(result.module, batch) - hf(tiny_bert.module, batch)).abs().max()) > 1e-3


def test_unsupported_peft_options_are_refused(tiny_bert, bert_dir: Path, tmp_path: Path) -> None:
    from surgeon.diagnostics import UserError

    base = copy.deepcopy(tiny_bert.module)
    biased = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["query"],
                                                       bias="all"))
    biased.save_pretrained(tmp_path / "biased")
    with pytest.raises(UserError, match="not supported yet: bias"):
        surgeon.plan(f'model hf "{bert_dir}"\nadapter load "{tmp_path / "biased"}"\n')


def test_compiling_leaves_the_callers_model_untouched(tiny_bert) -> None:
    module = tiny_bert.module
    before = {n: (p.requires_grad, p.detach().clone()) for n, p in module.named_parameters()}
    result = _adapted(tiny_bert, "pissa")
    _train(result, steps=2)
    for n, p in module.named_parameters():
        assert p.requires_grad == before[n][0], n
        assert torch.equal(p, before[n][1]), n


def test_eva_initialises_a_with_the_principal_directions_of_the_inputs(tiny_bert) -> None:
    from activations import stored_inputs

    model = tiny_bert.module
    path = "encoder.layer.1.attention.self.value"
    step = Adapter(target=path, rank=4, alpha=8, init="eva")
    result = surgeon.apply(model, [step], tokenizer=tiny_bert.tokenizer)
    x = stored_inputs(lambda ids, mask: model(input_ids=ids, attention_mask=mask),
                      model.get_submodule(path), result.captured.data.calibration)
    centred = (x - x.mean(0)).numpy()
    _, _, vt = __import__("numpy").linalg.svd(centred, full_matrices=False)  # independent PCA
    ours = result.module.get_submodule(f"model.{path}.adapter").lora_A.weight.double()
    ref = torch.from_numpy(vt[:4])
    signs = torch.sign((ours * ref).sum(1))
    torch.testing.assert_close(ours, signs[:, None] * ref, atol=1e-4, rtol=1e-3)
    assert result.report.fidelity["rel_error"] == 0.0  # B = 0: function-preserving


def test_adapter_statements_compose_and_refuse_conflicts() -> None:
    from surgeon.diagnostics import UserError
    from surgeon.ir import Factorize, Rank

    first = Adapter(target="layers.0.up", rank=2, alpha=4)
    second = Adapter(target="layers.1.up", rank=2, alpha=4)
    result = _stack([first, second])
    trainable = {n for n, p in result.module.named_parameters() if p.requires_grad}
    assert len(trainable) == 4  # the first statement's adapters still train
    with pytest.raises(UserError, match="already has an adapter"):
        _stack([first, first])
    with pytest.raises(UserError, match="has an adapter"):
        _stack([first, Factorize(target=first.target, rank=Rank(value=8))])
    big = Adapter(target=first.target, rank=17, alpha=4, init="pissa")
    with pytest.raises(UserError, match="needs rank <= 16"):  # the layer is 32x16
        _stack([big])


def test_rslora_adapters_round_trip_through_peft(tiny_bert, bert_dir: Path,
                                                 tmp_path: Path) -> None:
    base = copy.deepcopy(tiny_bert.module)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query"], use_rslora=True,
                             init_lora_weights="gaussian")
    theirs = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(3))
    theirs.save_pretrained(tmp_path / "in")
    result = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "in"}"\n'
                             f'save adapters "{tmp_path / "out"}"\n')
    again = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_bert.module),
                                           tmp_path / "out").eval()
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = theirs.eval()(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
        back = again(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
    torch.testing.assert_close(run(result.module, batch), want.last_hidden_state,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapters_take_the_base_weights_dtype(toy_models_on_path, method: str) -> None:
    from toy_models import tiny_mlp

    model = tiny_mlp().to(torch.bfloat16)
    x = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    step = Adapter(method=method, target="**", rank=4, alpha=8, init="gaussian")
    result = surgeon.apply(model, [step], example_inputs=(x,), dim_names=(("batch", None, None),))
    assert {p.dtype for p in result.module.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        torch.testing.assert_close(result.module(x), model(x))  # B = 0 (DoRA: m = ||W||)
    result.module(x).float().square().mean().backward()  # trains in the base's dtype
    assert all(p.grad is not None for p in result.module.parameters() if p.requires_grad)
