"""Decoder families end to end: tiny random Llama, tied-embedding Llama, Qwen2 (q/k/v
biases) and Mistral, built from transformers configs and saved as safetensors, are
loaded with their LM head, factorized, pruned, exported to ONNX (run in onnxruntime
here), saved and reloaded (surgeon's checkpoint and transformers' own classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.sources import load_hf
from surgeon.verify import next_token_nll
from tests.conftest import DECODERS, make_decoder


@pytest.fixture(scope="module", params=sorted(DECODERS))
def family(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    d = make_decoder(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, d


def _inputs(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(["The cat sat on the mat.", "Hello"], padding=True, return_tensors="pt")


def test_loads_with_its_head(family) -> None:
    name, d = family
    loaded = load_hf(d)
    assert loaded.causal_lm and type(loaded.module).__name__.endswith("ForCausalLM")
    enc = _inputs(loaded.tokenizer)
    assert enc["input_ids"][0, 0] == 256  # <s> first, as the tokenizer was trained
    logits = loaded.module(**enc).logits
    assert logits.shape == (*enc["input_ids"].shape, 259)
    head, embed = loaded.module.lm_head.weight, loaded.module.get_input_embeddings().weight
    assert (head.data_ptr() == embed.data_ptr()) == (name == "llama-tied")


def test_factorize_prune_export_and_reload(family, tmp_path: Path) -> None:
    name, d = family
    result = surgeon.compile(
        f'model hf "{d}"\ncalibrate text builtin samples 16 seqlen 32\n'
        'factorize "model.layers.*.mlp.*" rank 8 method svd_llm\n'
        'prune layers "model.layers" remove 1 by block_influence\n'
        'verify kl <= 10\n'
        f'export onnx "{tmp_path}/m.onnx"\nsave "{tmp_path}/ckpt"\n')
    f = result.report.fidelity
    assert f["perplexity"] > 1 and f["positions"] > 0
    enc = _inputs(load_hf(d).tokenizer)
    want = result.module(enc["input_ids"], enc["attention_mask"])
    reloaded = surgeon.load(tmp_path / "ckpt")(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(reloaded, want)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in enc.items()})[0]
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4, rtol=1e-4)
    if name == "qwen2":  # the q/k/v biases survive factorization of the MLP
        biases = [k for k, _ in result.module.named_parameters() if k.endswith("proj.bias")]
        assert {b.rsplit(".", 2)[-2] for b in biases} == {"q_proj", "k_proj", "v_proj"}


def test_pruned_checkpoint_reloads_in_transformers(family, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    name, d = family
    result = surgeon.compile(
        f'model hf "{d}"\ncalibrate text builtin samples 16 seqlen 32\n'
        'prune layers "model.layers" remove 1 by angular\n'
        f'save hf "{tmp_path}/hf"\n')
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == DECODERS[name][1]
    assert model.config.num_hidden_layers == 1
    assert model.config.tie_word_embeddings == (name == "llama-tied")
    enc = _inputs(load_hf(d).tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits,
                                   result.module(enc["input_ids"], enc["attention_mask"]))


def test_bfloat16_models_compile_in_bfloat16(decoder_dir: Path, tmp_path: Path) -> None:
    """`model ... dtype bfloat16` runs and writes bfloat16; the decomposition is taken in
    float64 from the bfloat16 weights, so it matches the same spec run in float32 up to
    bfloat16 rounding."""
    spec = (f'model hf "{decoder_dir}" dtype {{dtype}}\n'
            'calibrate text builtin samples 16 seqlen 32\n'
            'factorize "model.layers.*.mlp.*" rank 16 method svd_llm\n')
    half = surgeon.compile(spec.format(dtype="bfloat16") + f'save "{tmp_path}/ckpt"\n')
    full = surgeon.compile(spec.format(dtype="float32"))
    assert {p.dtype for p in half.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in surgeon.load(tmp_path / "ckpt").parameters()} == {torch.bfloat16}
    f16, f32 = half.report.fidelity, full.report.fidelity
    assert f16["kl"] < 0.05 and f16["perplexity_original"] == pytest.approx(
        f32["perplexity_original"], rel=0.02)
    with pytest.raises(UserError, match="export onnx cannot write a bfloat16 model"):
        surgeon.compile(spec.format(dtype="bfloat16") + f'export onnx "{tmp_path}/m.onnx"\n')
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("init", ["pissa", "gaussian"])
def test_adapters_fine_tune_and_load_in_peft_on_the_original_base(
        decoder_dir: Path, tmp_path: Path, init: str) -> None:
    """Next-token loss goes down when only the adapters train; PEFT loads the saved
    adapters onto the original LlamaForCausalLM with the compiled model's logits, and
    `adapter load` reads them back."""
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    result = surgeon.compile(
        f'model hf "{decoder_dir}"\ncalibrate text builtin samples 32 seqlen 32\n'
        f'adapter lora "model.layers.*.self_attn.{{q_proj,v_proj}}" rank 4 alpha 8 init {init}\n')
    module = result.module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all(".adapter." in n for n, p in module.named_parameters()
                             if p.requires_grad)
    opt = torch.optim.Adam(trainable, lr=1e-2)
    losses = []
    for _ in range(8):
        for batch in result.captured.data.calibration:
            loss = next_token_nll(module(*batch.inputs), batch.inputs[0], batch.mask).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0]
    module.eval()
    result.write([surgeon.ir.SaveAdapters(path=str(tmp_path / "ad"))])
    base = LlamaForCausalLM.from_pretrained(decoder_dir).eval()
    enc = _inputs(load_hf(decoder_dir).tokenizer)
    with torch.no_grad():
        before = base(**enc).logits
        want = peft.PeftModel.from_pretrained(base, tmp_path / "ad").eval()(**enc).logits
        ours = module(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(ours, want, atol=1e-4, rtol=1e-4)
    assert float((want - before).abs().max()) > 1e-2  # training did something
    again = surgeon.compile(f'model hf "{decoder_dir}"\ncalibrate text builtin samples 8\n'
                            f'adapter load "{tmp_path / "ad"}"\n')
    with torch.no_grad():
        torch.testing.assert_close(again.module(enc["input_ids"], enc["attention_mask"]), want,
                                   atol=1e-4, rtol=1e-4)
