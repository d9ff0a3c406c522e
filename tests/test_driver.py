"""Driver: pass failures are reported with context, `modified` must be truthful,
the registry refuses duplicates, verify failures write nothing, and the dry-run
plan predicts what the compile does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from toy_models import tiny_mlp

import surgeon
from surgeon import ir
from surgeon.diagnostics import PassError, VerifyError
from surgeon.registry import _PASSES, Pass, PassResult, register_pass


class Boom(ir.Node):
    kind: Literal["boom"] = "boom"


class Liar(ir.Node):
    kind: Literal["liar"] = "liar"


@pytest.fixture()
def test_passes():
    @register_pass(Boom)
    class BoomPass(Pass):
        name = "boom"

        def run(self, ctx, step):
            raise RuntimeError("kaboom")

    @register_pass(Liar)
    class LiarPass(Pass):
        name = "liar"

        def run(self, ctx, step):
            return PassResult(modified=True, layers=[])

    yield
    _PASSES.pop(Boom), _PASSES.pop(Liar)


def _apply(steps):
    return surgeon.apply(tiny_mlp(), steps, example_inputs=(torch.randn(4, 32),))


# tests/toy_models.py (tests/ is on sys.path): four residual blocks in "layers"
STACK = 'model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'


def test_failing_pass_names_itself_its_predecessors_and_spec_line(test_passes) -> None:
    span = ir.Span(line=7, column=1, end_line=7, end_column=5)
    steps = [ir.Factorize(target="up", rank=ir.Rank(value=4)), Boom(span=span)]
    with pytest.raises(PassError) as info:
        _apply(steps)
    err = info.value
    assert (err.pass_name, err.before, err.spec_line) == ("boom", ["factorize"], 7)
    assert "kaboom" in str(err)


def test_a_pass_that_claims_a_change_it_did_not_make_is_caught(test_passes) -> None:
    with pytest.raises(PassError, match="modified=True but the graph did not change"):
        _apply([Liar()])


def test_registering_a_step_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_pass(ir.Factorize)(type("Again", (), {}))


def test_failed_verify_raises_with_numbers_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = (f'{STACK}calibrate random samples 8\nfactorize "layers.*.up" rank 1\n'
            f'verify cosine >= 0.999\nexport onnx "{out}/m.onnx"\nsave "{out}/ckpt"\n')
    with pytest.raises(VerifyError) as info:
        surgeon.compile(spec, trust_code=True)
    assert info.value.measured["cosine"] < 0.999
    assert "cosine = 0." in info.value.format() and "spec line 5" in info.value.format()
    assert not out.exists()


def test_plan_predicts_the_compiled_parameter_count() -> None:
    spec = (f'{STACK}calibrate random samples 8\nfactorize "layers.{{0,1}}.up" energy 0.8\n'
            'factorize "layers.*.down" params 30%\n')
    planned = surgeon.plan(spec, trust_code=True)
    compiled = surgeon.compile(spec, trust_code=True).report
    assert planned["params_before"] == compiled.params_before
    assert planned["params_after"] == compiled.params_after
    assert [s["targets"] for s in planned["steps"]] == [s.targets for s in compiled.steps]
    ranks = [lp["detail"]["rank"] for lp in planned["steps"][0]["layers"]]
    assert ranks == [lp.detail.rank for lp in compiled.steps[0].layers]
    assert len(ranks) == 2 and None not in ranks  # both layers factorized, not kept dense


def test_plan_runs_the_steps_in_order_like_compile() -> None:
    """A later step is planned on what the earlier ones made of the model."""
    spec = (f'{STACK}calibrate random samples 8\n'
            'prune layers "layers" remove 2 by last\n'
            'factorize "layers.*.up" rank 4\n'
            'adapter dora "layers.*.down" rank 2 alpha 4\n'
            'fold\n')
    planned = surgeon.plan(spec, trust_code=True)
    compiled = surgeon.compile(spec, trust_code=True).report
    assert [s["targets"] for s in planned["steps"]] == [s.targets for s in compiled.steps]
    assert len(planned["steps"][1]["targets"]) == 2  # the two removed blocks (of 4) are gone
    assert planned["steps"][3]["targets"] == planned["steps"][2]["targets"]  # fold sees them
    assert [s["params_delta"] for s in planned["steps"]] == [s.params_delta
                                                             for s in compiled.steps]
    assert planned["params_after"] == compiled.params_after
