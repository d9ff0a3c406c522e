"""Graph rewrite helpers on a small exported graph, against eager torch math."""

from __future__ import annotations

import torch
from toy_models import tiny_mlp

from surgeon.capture import linear_sites
from surgeon.rewrite import FACTOR_META, LINEAR, drop_unused_params, finish, set_param, split_linear


def _exported():
    model = tiny_mlp()
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    return model, torch.export.export(model, (x,)).module(), x


def _linear(gm: torch.fx.GraphModule, weight: str) -> torch.fx.Node:
    return next(n for n in gm.graph.nodes if n.target == LINEAR and n.args[1].target == weight)


def test_split_linear_computes_second_times_first_and_keeps_the_bias() -> None:
    model, gm, x = _exported()
    gen = torch.Generator().manual_seed(1)
    first, second = torch.randn(5, 32, generator=gen), torch.randn(96, 5, generator=gen)
    set_param(gm, "up.factor_in", first)
    set_param(gm, "up.factor_out", second)
    split_linear(gm, _linear(gm, "up.weight"), "up.factor_in", "up.factor_out", 5)
    finish(gm)
    with torch.no_grad():
        want = model.down(torch.relu(x @ (second @ first).T + model.up.bias))
        torch.testing.assert_close(gm(x), want, rtol=1e-5, atol=1e-5)
    names = dict(gm.named_parameters())
    assert "up.weight" not in names and "up.bias" in names  # the dense weight is dropped
    tags = [n.meta[FACTOR_META] for n in gm.graph.nodes if FACTOR_META in n.meta]
    assert tags == [{"role": "in", "rank": 5}, {"role": "out", "rank": 5}]
    assert set(linear_sites(gm, "")) == {"down"}  # factors are not dense linear sites


def test_drop_unused_params_frees_exactly_what_no_node_reads() -> None:
    _, gm, x = _exported()
    set_param(gm, "up.spare", torch.zeros(7, 3))
    before = gm(x)
    assert drop_unused_params(gm) == 21
    assert "up.spare" not in dict(gm.named_parameters())
    assert drop_unused_params(gm) == 0  # nothing else was unused
    torch.testing.assert_close(gm(x), before)


def test_set_param_registers_a_contiguous_trainable_parameter() -> None:
    _, gm, _ = _exported()
    set_param(gm, "down.extra", torch.randn(4, 6).T)
    p = gm.get_parameter("down.extra")
    assert isinstance(p, torch.nn.Parameter) and p.is_contiguous() and p.requires_grad
