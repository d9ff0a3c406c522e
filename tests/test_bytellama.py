"""The embedded decoder `bytellama`: the model the issue asks for (checked against its
shape as transformers builds it), a byte tokenizer AutoTokenizer loads, weights that are
small, safetensors and trained (held-out perplexity well under an untrained model's and
the figure recorded at training), and surgeon's perplexity on it equal to transformers'
own `labels=` loss, exponentiated."""

from __future__ import annotations

import json
import math

import pytest
import torch

import surgeon
from surgeon.corpus import builtin_split
from surgeon.sources import embedded_model_dir, load_model

DIR = embedded_model_dir("bytellama")


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DIR, local_files_only=True).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DIR, local_files_only=True)


def test_shape_is_the_one_asked_for(model) -> None:
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    c = model.config
    assert type(model) is LlamaForCausalLM
    assert (c.hidden_size, c.num_attention_heads, c.head_dim, c.num_hidden_layers,
            c.intermediate_size) == (256, 4, 64, 8, 768)
    assert c.num_key_value_heads == 4 and c.hidden_act == "silu" and not c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    layer = model.model.layers[0]
    assert isinstance(layer.input_layernorm, LlamaRMSNorm)  # pre-norm
    assert {n for n, _ in layer.mlp.named_children()} >= {"gate_proj", "up_proj", "down_proj"}
    n = sum(p.numel() for p in model.parameters())
    assert 6_000_000 < n < 7_500_000


def test_weights_are_one_small_safetensors_file() -> None:
    files = sorted(p.name for p in DIR.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth"))
                                                    for f in files)
    assert (DIR / "model.safetensors").stat().st_size < 30 * 2**20


@pytest.mark.parametrize("text", ["Call me Ishmael.", "naïve café — 東京 🐍\n\ttabs", ""])
def test_tokenizer_is_bytes_after_bos(tokenizer, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    assert ids == [256, *text.encode("utf-8")]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (258, 257)


def _labels_perplexity(model, tokenizer, lines: list[str], seqlen: int) -> float:
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(lines), 16):
            enc = tokenizer(lines[i:i + 16], padding=True, truncation=True, max_length=seqlen,
                            return_tensors="pt")
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            n = int((labels[:, 1:] != -100).sum())
            nll += float(model(**enc, labels=labels).loss) * n
            count += n
    return math.exp(nll / count)


def test_trained_well_beyond_chance_and_as_recorded(model, tokenizer) -> None:
    held = builtin_split("books")[1]
    ppl = _labels_perplexity(model, tokenizer, held, 256)
    figures = json.loads((DIR / "training.json").read_text())
    assert ppl == pytest.approx(figures["heldout_ppl"], rel=1e-3)
    # the unigram byte model of the training text, scored on the held-out bytes: what
    # a model that ignores context can do
    train, _ = builtin_split("books")
    counts = torch.bincount(torch.tensor(list("\n".join(train).encode())), minlength=256)
    logp = torch.log((counts.double() + 1) / (counts.sum() + 256))
    held_bytes = torch.tensor(list("".join(held).encode()))
    unigram = math.exp(-float(logp[held_bytes].mean()))
    assert unigram > 15 and ppl < unigram / 4
    assert ppl < 3.5  # 3.11 as trained; a 6-layer model of this width reached 5.1 in 10 minutes


def test_surgeon_perplexity_is_transformers_loss(model, tokenizer) -> None:
    spec = surgeon.parse_spec('model "bytellama"\ncalibrate text builtin samples 8 seqlen 64\n')
    loaded = load_model(spec.model)
    assert loaded.causal_lm and loaded.corpus == "books"
    result = surgeon.compile(spec)
    want = _labels_perplexity(model, tokenizer, builtin_split("books")[1], 64)
    assert result.report.fidelity["perplexity_original"] == pytest.approx(want, rel=1e-4)
    assert result.report.fidelity["perplexity"] == pytest.approx(want, rel=1e-4)
