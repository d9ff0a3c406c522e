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


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama that reuses MiniLM's tokenizer (no hub access)."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, use_cache=False)
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    src = embedded_model_dir("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, d / name)
    return d


@pytest.fixture()
def toy_models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/toy_models.py importable as `toy_models` (for model python specs)."""
    monkeypatch.syspath_prepend(str(TESTS))
    sys.modules.pop("toy_models", None)
