"""Shared tiny-model fixtures: the embedded MiniLM, a random tiny Llama saved as a
local transformers directory, and a toy MLP for `model python` specs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from surgeon.sources import LoadedModel, embedded_model_dir, load_hf

TESTS = Path(__file__).parent
REPO = TESTS.parent


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_hf(embedded_model_dir("minilm"))


def make_llama(d: Path, layers: int, hidden: int = 64) -> Path:
    """A random Llama (seed 0) that reuses MiniLM's tokenizer (no hub access)."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, use_cache=False)
    LlamaModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    src = embedded_model_dir("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, d / name)
    return d


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
