"""Adapters whose rank or alpha differ per layer: EVA's redistribution (rho), and
PEFT's rank_pattern/alpha_pattern both ways. On the 2-layer tiny BERT (MiniLM's
layout and paths, narrower)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from outputs import hf, run

import surgeon
from surgeon.diagnostics import UserError
from surgeon.ir import Adapter, SaveAdapters

peft = pytest.importorskip("peft")

TARGET = "encoder.layer.*.{attention.self.value,intermediate.dense}"


def _perturb_b(module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)  # as if trained


def _adapters(module) -> dict[str, torch.nn.Module]:
    return {n.removeprefix("model.").removesuffix(".adapter"): m
            for n, m in module.named_modules() if n.endswith(".adapter")}


def test_eva_rho_moves_rank_keeps_budget_and_scaling(tiny_bert) -> None:
    from activations import stored_inputs

    step = Adapter(target=TARGET, rank=4, alpha=8, init="eva", rho=2)
    result = surgeon.apply(tiny_bert.module, [step], tokenizer=tiny_bert.tokenizer)
    adapters = _adapters(result.module)
    ranks = {p: a.rank for p, a in adapters.items()}
    assert sum(ranks.values()) == 4 * 4 and len(set(ranks.values())) > 1  # 2 layers x 2
    assert max(ranks.values()) <= 8
    assert all(a.scaling == pytest.approx(2.0) for a in adapters.values())  # alpha/r kept
    assert result.report.fidelity["rel_error"] == 0.0  # B = 0: function-preserving
    # the layer that gained rank holds the leading principal directions of its inputs
    path = max(ranks, key=ranks.get)
    x = stored_inputs(lambda ids, mask: tiny_bert.module(input_ids=ids, attention_mask=mask),
                      tiny_bert.module.get_submodule(path), result.captured.data.calibration)
    _, _, vt = np.linalg.svd((x - x.mean(0)).numpy(), full_matrices=False)
    ours = adapters[path].lora_A.weight.double()
    ref = torch.from_numpy(vt[: ranks[path]])
    signs = torch.sign((ours * ref).sum(1))
    torch.testing.assert_close(ours, signs[:, None] * ref, atol=1e-4, rtol=1e-3)


def test_redistributed_ranks_round_trip_through_peft_patterns(tiny_bert, bert_dir: Path,
                                                              tmp_path: Path) -> None:
    step = Adapter(target=TARGET, rank=4, alpha=8, init="eva", rho=2)
    result = surgeon.apply(tiny_bert.module, [step], tokenizer=tiny_bert.tokenizer)
    _perturb_b(result.module, 0)
    result.write([SaveAdapters(path=str(tmp_path / "ad"))])
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_bert.module), tmp_path / "ad").eval()
    assert theirs.peft_config["default"].rank_pattern  # ranks differ, so PEFT needs patterns
    loaded = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "ad"}"\n')
    want = {p: (a.rank, a.scaling) for p, a in _adapters(result.module).items()}
    assert {p: (a.rank, a.scaling) for p, a in _adapters(loaded.module).items()} == want
    for batch in loaded.captured.data.heldout:
        ours = run(result.module, batch)
        torch.testing.assert_close(hf(theirs, batch), ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run(loaded.module, batch), ours, atol=1e-5, rtol=1e-5)
        assert float((ours - hf(tiny_bert.module, batch)).abs().max()) > 1e-3


def test_peft_rank_and_alpha_patterns_load_here(tiny_bert, bert_dir: Path, tmp_path: Path) -> None:
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                             rank_pattern={"layer.0.attention.self.query": 2, "value": 6},
                             alpha_pattern={"layer.[12].attention.self.query": 32},
                             init_lora_weights="gaussian")
    theirs = peft.get_peft_model(copy.deepcopy(tiny_bert.module), config)
    _perturb_b(theirs, 1)
    theirs.save_pretrained(tmp_path / "in")
    result = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "in"}"\n')
    adapters = _adapters(result.module)
    assert adapters["encoder.layer.0.attention.self.query"].rank == 2
    assert adapters["encoder.layer.1.attention.self.value"].rank == 6
    assert adapters["encoder.layer.1.attention.self.query"].scaling == 32 / 4
    assert adapters["encoder.layer.0.attention.self.query"].scaling == 8 / 2
    theirs.eval()
    for batch in result.captured.data.heldout:
        torch.testing.assert_close(run(result.module, batch), hf(theirs, batch),
                                   atol=1e-5, rtol=1e-5)


def test_mixed_adapters_save_with_patterns_or_are_refused(tiny_bert, tmp_path: Path) -> None:
    pissa = Adapter(target="encoder.layer.0.attention.self.query", rank=2, alpha=4, init="pissa")
    lora = Adapter(target="encoder.layer.1.attention.self.query", rank=2, alpha=4)
    result = surgeon.apply(tiny_bert.module, [pissa, lora], tokenizer=tiny_bert.tokenizer)
    _perturb_b(result.module, 2)
    result.write([SaveAdapters(path=str(tmp_path / "mixed"))])  # PiSSA saves at rank 4
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_bert.module),
                                            tmp_path / "mixed").eval()
    batch = result.captured.data.heldout[0]
    assert float((run(result.module, batch) - hf(theirs, batch)).abs().max()) <= 1e-4
    dora = Adapter(method="dora", target="encoder.layer.1.attention.self.query", rank=2, alpha=4)
    result = surgeon.apply(tiny_bert.module, [pissa, dora], tokenizer=tiny_bert.tokenizer)
    with pytest.raises(UserError, match="mix DoRA"):
        result.write([SaveAdapters(path=str(tmp_path / "refused"))])
    assert not (tmp_path / "refused").exists()


def test_sparse_configs_take_peft_defaults(tiny_bert, bert_dir: Path, tmp_path: Path) -> None:
    """Older or hand-written configs may omit use_dora, r and lora_alpha."""
    import json

    config = peft.LoraConfig(r=8, lora_alpha=8, target_modules=["key"],
                             init_lora_weights="gaussian")
    theirs = peft.get_peft_model(copy.deepcopy(tiny_bert.module), config)
    _perturb_b(theirs, 3)
    theirs.save_pretrained(tmp_path / "in")
    path = tmp_path / "in" / "adapter_config.json"
    sparse = {k: v for k, v in json.loads(path.read_text()).items()
              if k not in ("use_dora", "r", "lora_alpha")}
    path.write_text(json.dumps(sparse))
    again = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_bert.module), tmp_path / "in").eval()
    result = surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                             f'adapter load "{tmp_path / "in"}"\n')
    batch = result.captured.data.heldout[0]
    torch.testing.assert_close(run(result.module, batch), hf(again, batch),
                               atol=1e-5, rtol=1e-5)
