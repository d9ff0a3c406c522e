"""Capture: torch.export graphs with module paths and dynamic batch/seq."""

from __future__ import annotations

import pytest
import torch

from surgeon import ir
from surgeon.capture import capture, entry_point
from surgeon.corpus import text_data
from surgeon.sources import load_hf


def _capture(loaded):
    data = text_data(loaded.tokenizer, ir.Calibrate(samples=8), loaded.max_positions)
    entry, prefix, name = entry_point(loaded.module, text=True)
    return entry, capture(entry, data, prefix, name)


@pytest.fixture(scope="module")
def minilm_captured(minilm):
    """MiniLM captured once for the tests that only read the graph."""
    return _capture(minilm)


def test_minilm_linears_resolve_to_module_paths(minilm, minilm_captured) -> None:
    _, captured = minilm_captured
    sites = captured.linear_sites()
    assert len(sites) == 6 * 6  # q, k, v, attn out, ffn in, ffn out; the unused pooler is dropped
    assert "pooler.dense" not in sites
    q = sites["encoder.layer.3.attention.self.query"]
    assert (q.out_features, q.in_features, q.bias) == (384, 384, True)
    ffn = sites["encoder.layer.0.intermediate.dense"]
    assert (ffn.out_features, ffn.in_features) == (1536, 384)
    module = minilm.module.get_submodule("encoder.layer.0.intermediate.dense")
    assert torch.equal(captured.gm.get_parameter(ffn.weight), module.weight)


def test_captured_graph_is_dynamic_in_batch_and_seq(minilm, minilm_captured) -> None:
    entry, captured = minilm_captured
    texts = ["short", "a noticeably longer sentence that needs more tokens than the first", "x"]
    enc = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"])
    assert args[0].shape[0] == 3 and args[0].shape[1] != captured.data.example[0].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(captured.gm(*args), entry(*args), atol=1e-5, rtol=1e-5)


def test_tiny_llama_captures_with_its_module_paths(llama_dir) -> None:
    loaded = load_hf(llama_dir)
    entry, captured = _capture(loaded)
    sites = captured.linear_sites()
    assert {"layers.0.self_attn.q_proj", "layers.1.mlp.down_proj"} <= set(sites)
    assert sites["layers.0.self_attn.k_proj"].out_features == 32  # 2 kv heads x 16
    assert not sites["layers.0.mlp.gate_proj"].bias
    enc = loaded.tokenizer(["hello there", "general kenobi, you are a bold one"],
                           padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(captured.gm(enc["input_ids"], enc["attention_mask"]),
                                   entry(enc["input_ids"], enc["attention_mask"]))


def test_tiny_llama_compiles_end_to_end(llama_dir, tmp_path) -> None:
    import surgeon

    spec = (f'model hf "{llama_dir}"\ncalibrate text builtin samples 8 seqlen 32\n'
            'factorize "layers.*.mlp.{gate,up,down}_proj" rank 8\n'
            f'export onnx "{tmp_path}/llama.onnx"\nsave "{tmp_path}/ckpt"\n')
    result = surgeon.compile(spec)
    assert result.report.steps[0].targets == [f"layers.{i}.mlp.{p}_proj" for i in (0, 1)
                                              for p in ("gate", "up", "down")]
    assert result.report.artifacts[0].ort_max_abs_diff <= 1e-4
    reloaded = surgeon.load(tmp_path / "ckpt")
    ids, mask = result.captured.data.heldout[0].inputs
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask), result.module(ids, mask), atol=0, rtol=0)
