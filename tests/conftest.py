"""Shared tiny-model fixtures: the embedded MiniLM, random tiny BERTs and Llamas saved
as local transformers directories, and a toy MLP for `model python` specs.

The tiny BERTs have MiniLM's architecture, tokenizer and module paths
(`encoder.layer.N.attention.self.query` ...), with fewer, narrower layers (hidden
32): tests of passes, PEFT files and emitters run on them in a fraction of
MiniLM's time (capture and ONNX export cost grows with the layer count). Tests
where MiniLM itself is the point (shipped specs, PEFT interop on the real base,
the demo) keep the real model."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# Set before torch loads its OpenMP runtime (libgomp reads it once). With the default
# (active) policy, torch's idle worker threads spin; when other processes share the
# cores they steal them from the thread doing the work, and the suite runs 3-5x slower
# (a shipped spec: 20 s passive vs 65-115 s active, 2 threads on 2 busy cores). The
# passive policy keeps the same threads and results, without the spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from surgeon.sources import LoadedModel, embedded_model_dir, load_hf  # noqa: E402

TESTS = Path(__file__).parent
REPO = TESTS.parent


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_hf(embedded_model_dir("minilm"))


def _with_minilm_tokenizer(d: Path) -> Path:
    src = embedded_model_dir("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, d / name)
    return d


def make_llama(d: Path, layers: int, hidden: int = 64) -> Path:
    """A random Llama (seed 0) that reuses MiniLM's tokenizer (no hub access)."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, use_cache=False)
    LlamaModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    return _with_minilm_tokenizer(d)


# Decoder families as transformers builds them: Llama, Llama with tied embeddings, Qwen2
# (biases on q/k/v) and Mistral; each with the embedded bytellama's byte tokenizer.
DECODERS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
}


def make_decoder(d: Path, family: str = "llama", layers: int = 2, hidden: int = 32) -> Path:
    """A random *ForCausalLM (seed 0) saved as safetensors with a byte tokenizer. Weights
    are drawn at std 0.1 (not 0.02) so next-token distributions are far from uniform."""
    import transformers

    config_name, model_name, extra = DECODERS[family]
    torch.manual_seed(0)
    cfg = getattr(transformers, config_name)(
        vocab_size=259, hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, bos_token_id=256, eos_token_id=257, pad_token_id=258,
        use_cache=False, initializer_range=0.1, **extra)
    getattr(transformers, model_name)(cfg).eval().save_pretrained(d, safe_serialization=True)
    src = embedded_model_dir("bytellama")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, d / name)
    return d


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random LlamaForCausalLM, hidden 32, byte tokenizer: `model hf` loads it
    with its head, as (input_ids, attention_mask) -> logits."""
    return make_decoder(tmp_path_factory.mktemp("tiny-decoder"), "llama")


def make_bert(d: Path, layers: int, hidden: int = 32) -> Path:
    """A random BERT (seed 0) shaped like MiniLM (BertModel, 4x feed-forward, GELU,
    512 positions, MiniLM's tokenizer), only narrower. Weights are drawn at about
    1/sqrt(hidden), the scale of trained ones, so every block changes its input
    (at BERT's default 0.02 a block of width 32 would barely move the residual)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, intermediate_size=4 * hidden,
                     num_hidden_layers=layers, num_attention_heads=4,
                     max_position_embeddings=512, initializer_range=0.15)
    BertModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    return _with_minilm_tokenizer(d)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT, hidden size 32: MiniLM's paths in miniature, captured and
    exported to ONNX in a fraction of MiniLM's time."""
    return make_bert(tmp_path_factory.mktemp("tiny-bert"), layers=2)


@pytest.fixture(scope="session")
def tiny_bert(bert_dir: Path) -> LoadedModel:
    """bert_dir loaded as `model hf` loads it (eval mode, with its tokenizer)."""
    return load_hf(bert_dir)


@pytest.fixture(scope="session")
def bert4_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random BERT, hidden size 32: a layer list worth pruning."""
    return make_bert(tmp_path_factory.mktemp("tiny-bert4"), layers=4)


@pytest.fixture(scope="session")
def tiny_bert4(bert4_dir: Path) -> LoadedModel:
    return load_hf(bert4_dir)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama, hidden size 64."""
    return make_llama(tmp_path_factory.mktemp("tiny-llama"), layers=2)


@pytest.fixture(scope="session")
def llama4_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random Llama, hidden size 32: layer lists worth pruning, in seconds."""
    return make_llama(tmp_path_factory.mktemp("tiny-llama4"), layers=4, hidden=32)


@pytest.fixture()
def toy_models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/toy_models.py importable as `toy_models` (for model python specs)."""
    monkeypatch.syspath_prepend(str(TESTS))
    sys.modules.pop("toy_models", None)
