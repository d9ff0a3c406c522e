"""factorize: the math against numpy, the graph rewrite structurally, and the
break-even rule. Text-model cases run on the tiny BERTs (MiniLM's layout, narrower)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from activations import stored_inputs
from toy_models import tiny_mlp  # noqa: E402  (tests/ is on sys.path via conftest rootdir)

import surgeon
from surgeon.ir import Energy, Factorize, ParamsFraction, Rank
from surgeon.lowrank import decompose
from surgeon.passes.factorize import breakeven_rank, choose_rank
from surgeon.rewrite import LINEAR


def _linear_count(gm: torch.fx.GraphModule) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target == LINEAR)


@pytest.mark.parametrize("k", [1, 5, 17, 40])
def test_eckart_young_truncation_error(k: int) -> None:
    rng = np.random.default_rng(k)
    w = rng.standard_normal((48, 80))
    first, second = decompose("svd", torch.from_numpy(w)).factors(k, torch.float64)
    approx = (second @ first).numpy()
    s = np.linalg.svd(w, compute_uv=False)
    assert first.shape == (k, 80) and second.shape == (48, k)
    assert np.linalg.norm(w - approx) == pytest.approx(np.sqrt(np.sum(s[k:] ** 2)), rel=1e-9)
    assert np.linalg.matrix_rank(approx) == k


def test_rank_specs_follow_their_definitions() -> None:
    out_f, in_f = 96, 32
    assert choose_rank(Rank(value=7), out_f, in_f) == 7
    # params P% of the dense layer: k (out + in) <= P/100 * out * in
    k = choose_rank(ParamsFraction(percent=50), out_f, in_f)
    assert k * (out_f + in_f) <= 0.5 * out_f * in_f < (k + 1) * (out_f + in_f)
    s = torch.linspace(10, 0.1, 32, dtype=torch.float64)
    energy = (s**2).numpy()
    for fraction in (0.5, 0.9, 0.99, 1.0):
        k = choose_rank(Energy(fraction=fraction), out_f, in_f, s)
        kept = energy[:k].sum() / energy.sum()
        assert kept >= fraction - 1e-9
        assert k == 1 or energy[: k - 1].sum() / energy.sum() < fraction
    assert breakeven_rank(out_f, in_f) == (out_f * in_f - 1) // (out_f + in_f)


def test_factorized_graph_equals_the_two_matrices() -> None:
    model = tiny_mlp()
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    result = surgeon.apply(model, [Factorize(target="up", rank=Rank(value=8))],
                           example_inputs=(x,), dim_names=(("batch", None),))
    gm = result.module
    # independent reference: numpy rank-8 truncation of the original weight
    w, b = model.up.weight.detach().double().numpy(), model.up.bias.detach().double().numpy()
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    w8 = (u[:, :8] * s[:8]) @ vt[:8]
    h = np.maximum(x.double().numpy() @ w8.T + b, 0)
    want = h @ model.down.weight.detach().double().numpy().T
    np.testing.assert_allclose(gm(x).detach().double().numpy(), want, atol=1e-5)
    # the graph now holds two linears in place of one, and the dense weight is gone
    params = dict(gm.named_parameters())
    assert "up.weight" not in params
    assert params["up.factor_in"].shape == (8, 32)
    assert params["up.factor_out"].shape == (96, 8)
    assert _linear_count(gm) == 3
    assert result.report.steps[0].params_delta == 8 * (32 + 96) - 32 * 96
    assert result.report.params_after == sum(p.numel() for p in gm.parameters())


def test_rank_that_saves_nothing_keeps_the_layer_dense() -> None:
    model = tiny_mlp()
    x = torch.randn(4, 32)
    too_big = breakeven_rank(96, 32) + 1
    result = surgeon.apply(model, [Factorize(target="up", rank=Rank(value=too_big))],
                           example_inputs=(x,))
    step = result.report.steps[0]
    assert not step.modified and step.params_delta == 0
    assert step.layers[0].detail.rank is None
    assert any("kept dense" in w for w in result.report.warnings)
    assert torch.allclose(result.module(x), model(x))


def test_factorized_bert_layers_hold_the_planned_rank(tiny_bert) -> None:
    query = "encoder.layer.*.attention.self.query"
    steps = [Factorize(target=query, rank=ParamsFraction(percent=25))]
    result = surgeon.apply(tiny_bert.module, steps, tokenizer=tiny_bert.tokenizer)
    k = choose_rank(ParamsFraction(percent=25), 32, 32)
    shapes = {n: tuple(p.shape) for n, p in result.module.named_parameters() if "factor" in n}
    assert len(shapes) == 4  # factor_in and factor_out on 2 layers
    assert {s for n, s in shapes.items() if n.endswith("factor_in")} == {(k, 32)}
    assert {s for n, s in shapes.items() if n.endswith("factor_out")} == {(32, k)}
    assert result.report.fidelity["cosine"] > 0.9


def _whitened_rank(weight: torch.Tensor, gram: torch.Tensor, fraction: float) -> int:
    s = np.linalg.svd(weight.double().numpy() @ np.linalg.cholesky(gram.numpy()),
                      compute_uv=False)
    kept = np.cumsum(s**2) / np.sum(s**2)
    return int(np.searchsorted(kept, fraction - 1e-12)) + 1


def test_svd_llm_energy_and_report_match_direct_computation(tiny_bert) -> None:
    path = "encoder.layer.1.attention.self.key"
    steps = [Factorize(target=path, rank=Energy(fraction=0.9), method="svd_llm")]
    model = tiny_bert.module
    result = surgeon.apply(model, steps, tokenizer=tiny_bert.tokenizer)
    layer = result.report.steps[0].layers[0]
    captured = result.captured
    module = model.get_submodule(path)

    def inputs(batches) -> torch.Tensor:
        return stored_inputs(lambda ids, mask: model(input_ids=ids, attention_mask=mask),
                             module, batches)

    x = inputs(captured.data.calibration)
    w = module.weight.detach().double()
    assert layer.detail.rank == _whitened_rank(w, x.T @ x, 0.9)
    params = dict(result.module.named_parameters())
    approx = (params[f"model.{path}.factor_out"] @ params[f"model.{path}.factor_in"]).detach()
    approx = approx.double()
    xh = inputs(captured.data.heldout)
    direct = float(torch.linalg.norm((w - approx) @ xh.T) / torch.linalg.norm(w @ xh.T))
    assert layer.detail.heldout_rel_error == pytest.approx(direct, rel=1e-3)
    assert 0 < layer.detail.predicted_loss <= 0.1 + 1e-9


def test_budget_keeps_each_role_within_its_share(tiny_bert4) -> None:
    from surgeon.ir import Budget

    steps = [Factorize(target="encoder.layer.*.{intermediate,output}.dense",
                       rank=Budget(percent=40), method="svd_llm")]
    result = surgeon.apply(tiny_bert4.module, steps, tokenizer=tiny_bert4.tokenizer)
    layers = result.report.steps[0].layers
    for role in ("intermediate", "output"):
        members = [lp for lp in layers if f".{role}." in lp.path]
        assert len(members) == 4
        dense = sum(lp.shape[0] * lp.shape[1] for lp in members)
        kept = sum(lp.detail.rank * (lp.shape[0] + lp.shape[1]) for lp in members)
        assert kept <= 0.4 * dense
        assert kept > 0.4 * dense - max(lp.shape[0] + lp.shape[1] for lp in members)
    assert len({lp.detail.rank for lp in layers}) > 2  # ranks differ across depth
