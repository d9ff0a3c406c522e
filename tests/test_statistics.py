"""Statistics are taken on the graph as it stands when a step runs: after
`prune layers`, `factorize ... method svd_llm` whitens with the Grams of the
pruned model, equal to a direct computation with forward hooks on the pruned
eager model; steps that see the same graph share one pass over the data."""

from __future__ import annotations

import torch
from activations import stored_inputs
from torch import nn

import surgeon
from surgeon.calibration import LayerStats
from surgeon.capture import TextEncoder
from surgeon.lowrank import decompose


def _pruned_eager(llama_dir, removed: list[int]):
    from transformers import LlamaModel

    model = LlamaModel.from_pretrained(llama_dir).eval()
    kept = [i for i in range(len(model.layers)) if i not in removed]
    model.layers = nn.ModuleList([model.layers[i] for i in kept])
    model.config.num_hidden_layers = len(kept)
    return model, kept


def _whitened(weight: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    first, second = decompose("svd_llm", weight, LayerStats({"gram": x.T @ x})).factors(
        k, torch.float64)
    return second @ first


def test_factorize_after_prune_whitens_with_the_pruned_models_grams(llama4_dir) -> None:
    spec = (f'model hf "{llama4_dir}"\ncalibrate text builtin samples 16 seqlen 32\n'
            'prune layers "layers" remove 1 by first\n'
            'factorize "layers.*.mlp.down_proj" rank 4 method svd_llm\n')
    result = surgeon.compile(spec)
    removed = [i for i, lp in enumerate(result.report.steps[0].layers) if lp.detail.removed]
    assert removed == [0]
    pruned, kept = _pruned_eager(llama4_dir, removed)
    original = _pruned_eager(llama4_dir, [])[0]
    batches = result.captured.data.calibration
    assert result.report.steps[1].targets == [f"layers.{i}.mlp.down_proj" for i in kept]
    for position, i in enumerate(kept):
        path = f"layers.{i}.mlp.down_proj"
        w = original.layers[i].mlp.down_proj.weight.detach().double()
        got = (result.module.get_parameter(f"model.{path}.factor_out").double()
               @ result.module.get_parameter(f"model.{path}.factor_in").double())
        fresh = stored_inputs(TextEncoder(pruned), pruned.layers[position].mlp.down_proj,
                              batches)
        want = _whitened(w, fresh, 4)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        stale = stored_inputs(TextEncoder(original), original.layers[i].mlp.down_proj, batches)
        assert (got - _whitened(w, stale, 4)).norm() > 1e-3 * want.norm()  # it matters


def test_steps_that_see_the_same_graph_share_one_pass(monkeypatch) -> None:
    from surgeon import calibration

    runs = []
    original = calibration.CalibrationStats.collect

    def counted(self, progress=None):
        runs.append(sorted(self.wanted))
        return original(self, progress)

    monkeypatch.setattr(calibration.CalibrationStats, "collect", counted)
    spec = ('model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
            'calibrate random samples 16\n'
            'adapter lora "layers.0.up" rank 2 alpha 4 init eva\n'
            'factorize "layers.1.up" rank 4 method svd_llm\n'
            'factorize "layers.2.up" rank 4 method asvd\n')
    surgeon.compile(spec, trust_code=True)
    # the adapter keeps the function, so it shares the first pass with the first factorize;
    # that factorize changes what layer 2 sees, so the second one collects afresh
    assert runs == [["layers.0.up", "layers.1.up"], ["layers.2.up"]]


def test_steps_after_an_invalidating_step_that_changed_nothing_get_their_statistics(
        ) -> None:
    spec = ('model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
            'calibrate random samples 16\n'
            'prune layers "layers" remove 0 by last\n'  # may invalidate, changes nothing
            'factorize "layers.*.up" rank 4 method svd_llm\n')
    result = surgeon.compile(spec, trust_code=True)
    assert not result.report.steps[0].modified
    layers = result.report.steps[1].layers
    assert len(layers) == 4 and all(lp.detail.heldout_rel_error is not None for lp in layers)
