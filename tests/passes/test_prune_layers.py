"""prune layers: scores against hidden states captured with forward hooks,
selection rules, the graph rewrite, and transformers checkpoints that reload.

Scores and selection run on the 4-layer tiny BERT (MiniLM's layout, narrower),
rules that need no text model on the toy residual stack; `save hf` reloads a
pruned MiniLM and a pruned tiny Llama in transformers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.ir import PruneLayers

# tests/toy_models.py (tests/ is on sys.path): four residual blocks in "layers"
STACK = 'model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'


def _hidden_states(bert, batches) -> tuple[list[np.ndarray], int]:
    """Boundary states h_0..h_L from forward hooks on the eager BertLayers (real tokens)."""
    layers = bert.module.encoder.layer
    per_batch = []
    for batch in batches:
        seen: list[torch.Tensor] = []
        hooks = [layers[0].register_forward_hook(
            lambda m, a, o, s=seen: s.insert(0, a[0]) if not s else None)]
        hooks += [layer.register_forward_hook(
            lambda m, a, o, s=seen: s.append(o[0] if isinstance(o, tuple) else o))
            for layer in layers]
        with torch.no_grad():
            bert.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
        for h in hooks:
            h.remove()
        per_batch.append([h[batch.mask].double().numpy() for h in seen])
    states = [np.concatenate([b[i] for b in per_batch]) for i in range(len(per_batch[0]))]
    return states, len(layers)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def captured(tiny_bert4):
    """The tiny BERT captured once (no steps); each test prunes a deep copy of it."""
    return surgeon.apply(tiny_bert4.module, [], tokenizer=tiny_bert4.tokenizer)


def _pruned(captured, step: PruneLayers):
    return copy.deepcopy(captured).apply([step])


@pytest.fixture(scope="module")
def scored(captured, tiny_bert4):
    step = PruneLayers(layers="encoder.layer", mode="remove", count=2, by="block_influence")
    result = _pruned(captured, step)
    states, n = _hidden_states(tiny_bert4, result.captured.data.calibration)
    return result, states, n


def test_block_influence_equals_direct_numpy(scored) -> None:
    result, h, n = scored
    bi = [1 - _cos(h[i], h[i + 1]).mean() for i in range(n)]
    layers = result.report.steps[0].layers
    np.testing.assert_allclose([lp.detail.score for lp in layers], bi, rtol=1e-6)
    lowest = sorted(np.argsort(bi, kind="stable")[:2])
    assert [i for i, lp in enumerate(layers) if lp.detail.removed] == lowest


def test_angular_removes_the_closest_contiguous_run(scored, captured) -> None:
    _, h, n = scored
    for count in (1, 2, 3):
        d = [np.arccos(np.clip(_cos(h[lo], h[lo + count]), -1, 1)).mean() / np.pi
             for lo in range(n - count + 1)]
        step = PruneLayers(layers="encoder.layer", mode="remove", count=count, by="angular")
        result = _pruned(captured, step)
        removed = [i for i, lp in enumerate(result.report.steps[0].layers) if lp.detail.removed]
        start = int(np.argmin(d))
        assert removed == list(range(start, start + count))


def test_removed_blocks_leave_the_graph_and_the_parameters(scored) -> None:
    result, _, _ = scored
    removed = [lp.path for lp in result.report.steps[0].layers if lp.detail.removed]
    names = [n for n, _ in result.module.named_parameters()]
    for path in removed:
        assert not any(n.startswith(f"model.{path}.") for n in names)
    stacks = [str(n.meta.get("nn_module_stack")) for n in result.module.graph.nodes]
    assert not any(f"'model.{removed[0]}'" in s for s in stacks)
    assert result.report.params_after == sum(p.numel() for _, p in result.module.named_parameters())


@pytest.mark.parametrize("mode,count,by,expected", [  # of 4 layers
    ("remove", 2, "last", [2, 3]), ("remove", 3, "first", [0, 1, 2]),
    ("keep", 3, "last", [3]), ("keep", 4, "first", []),
])
def test_baseline_selection(captured, mode: str, count: int, by: str,
                            expected: list[int]) -> None:
    step = PruneLayers(layers="encoder.layer", mode=mode, count=count, by=by)
    result = _pruned(captured, step)
    layers = result.report.steps[0].layers
    assert [i for i, lp in enumerate(layers) if lp.detail.removed] == expected


def test_where_threshold_removes_every_block_below_it(scored, captured) -> None:
    _, h, n = scored
    bi = np.array([1 - _cos(h[i], h[i + 1]).mean() for i in range(n)])
    threshold = float(np.sort(bi)[2] + 1e-9)  # the three lowest fall below
    step = PruneLayers(layers="encoder.layer", mode="where", threshold=threshold)
    result = _pruned(captured, step)
    removed = [i for i, lp in enumerate(result.report.steps[0].layers) if lp.detail.removed]
    assert removed == sorted(np.flatnonzero(bi < threshold).tolist()) and len(removed) == 3


def test_remove_zero_is_the_identity() -> None:
    from toy_models import tiny_stack

    step = PruneLayers(layers="layers", mode="remove", count=0)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    result = surgeon.apply(tiny_stack(), [step], example_inputs=(x,))
    assert not result.report.steps[0].modified
    assert result.report.params_after == result.report.params_before
    assert result.report.fidelity["rel_error"] == 0.0


def test_plan_predicts_the_pruned_parameter_count() -> None:
    from toy_models import tiny_stack

    spec = f'{STACK}calibrate random samples 8\nprune layers "layers" remove 2 by first\n'
    planned = surgeon.plan(spec, trust_code=True)
    block = sum(p.numel() for p in tiny_stack().layers[0].parameters())
    assert planned["params_before"] - planned["params_after"] == 2 * block
    assert planned["params_after"] == surgeon.compile(spec, trust_code=True).report.params_after


def test_removing_more_layers_than_exist_fails_at_plan_time() -> None:
    with pytest.raises(UserError, match="remove 5 of 4 layers is impossible"):
        surgeon.plan(f'{STACK}prune layers "layers" remove 5 by last\n', trust_code=True)
    with pytest.raises(UserError, match="not a layer list") as info:
        surgeon.plan(f'{STACK}prune layers "layer" remove 1 by last\n', trust_code=True)
    assert "layers" in (info.value.hint or "")


def _reload_parity(result, out: Path) -> float:
    from transformers import AutoModel

    from surgeon.capture import TextEncoder

    model = TextEncoder(AutoModel.from_pretrained(out, local_files_only=True).eval())
    diffs = []
    for batch in result.captured.data.heldout:
        with torch.no_grad():
            diffs.append(float((model(*batch.inputs) - result.module(*batch.inputs)).abs().max()))
    return max(diffs)


def test_bert_checkpoint_reloads_in_transformers(tmp_path: Path) -> None:
    result = surgeon.compile('model "minilm"\ncalibrate text builtin samples 16\n'
                             'prune layers "encoder.layer" remove 2 by block_influence\n'
                             f'save hf "{tmp_path}/hf"\n')
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == 4
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    assert _reload_parity(result, tmp_path / "hf") <= 1e-5


def test_llama_checkpoint_reloads_in_transformers(llama_dir, tmp_path: Path) -> None:
    result = surgeon.compile(f'model hf "{llama_dir}"\ncalibrate text builtin samples 8\n'
                             'prune layers "layers" remove 1 by angular\n'
                             f'save hf "{tmp_path}/hf"\n')
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["num_hidden_layers"] == 1
    assert _reload_parity(result, tmp_path / "hf") <= 1e-5


def test_save_hf_refuses_factorized_models(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="architecture-preserving"):
        surgeon.compile('model "minilm"\nfactorize "encoder.layer.0.**" rank 8\n'
                        f'export onnx "{tmp_path}/m.onnx"\nsave hf "{tmp_path}/hf"\n')
    assert not (tmp_path / "hf").exists() and not (tmp_path / "m.onnx").exists()
    with pytest.raises(UserError, match="unfolded adapters"):
        surgeon.compile('model "minilm"\nadapter lora "**.query" rank 2 alpha 4\n'
                        f'save hf "{tmp_path}/hf"\n')


def test_report_directory_is_reproducible(tmp_path: Path, monkeypatch) -> None:
    spec = (f'{STACK}calibrate random samples 16\n'
            'prune layers "layers" remove 1 by block_influence\nreport "rep"\n')
    for name in ("a", "b"):  # the same spec, run from two working directories
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        surgeon.compile(spec, trust_code=True)
    a, b = tmp_path / "a" / "rep", tmp_path / "b" / "rep"
    for f in ("report.json", "line4_prune_layers.png"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "line4_prune_layers.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((a / "report.json").read_text())
    assert "seconds" not in report and report["steps"][0]["layers"][0]["detail"]["score"] > 0
