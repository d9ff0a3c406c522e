"""fold norms: exact on decoder families (RMSNorm as transformers writes it, tied and
untied embeddings, q/k/v biases) and on nn.LayerNorm with a shift; refused with the
reason on a post-norm encoder. Norm weights are perturbed first: transformers
initialises them to ones, where folding would be a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.driver import compile_spec
from surgeon.sources import load_hf
from tests.conftest import DECODERS, make_decoder


def _perturbed(d: Path):
    loaded = load_hf(d)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in loaded.module.named_parameters():
            if "norm" in name:
                p.mul_(1 + 0.5 * torch.randn(p.shape, generator=gen))
    return loaded


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_exact_on_decoders(family: str, tmp_path: Path) -> None:
    loaded = _perturbed(make_decoder(tmp_path / family, family))
    embed_before = loaded.module.get_input_embeddings().weight.detach().clone()
    spec = surgeon.parse_spec('model hf "x"\ncalibrate text builtin samples 8 seqlen 32\n'
                              'fold norms\n')
    result = compile_spec(spec, loaded, allow_outside=True)
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
        got = result.module(*batch.inputs)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    params = dict(result.module.named_parameters())
    norms = {n: p for n, p in params.items() if "norm" in n}
    assert norms and all(bool((p == 1).all()) for p in norms.values())
    lookup = next(n for n in result.module.graph.nodes
                  if n.target == torch.ops.aten.embedding.default)
    embed = result.module.get_parameter(lookup.args[0].target)
    torch.testing.assert_close(embed, embed_before, atol=0, rtol=0)  # tied: untied first
    (step,) = result.report.steps
    untied = [lp for lp in step.layers if lp.params_before == 0]
    assert len(untied) == (family == "llama-tied")  # lm_head's own copy, counted as new
    assert step.modified and len(step.layers) == 2 * 2 + 1 + len(untied)  # + the final norm
    assert sum(lp.params_after - lp.params_before for lp in step.layers) == step.params_delta


def test_layernorm_shift_becomes_a_bias(toy_models_on_path) -> None:
    from toy_models import tiny_stack

    model = tiny_stack()
    with torch.no_grad():
        for block in model.layers:
            block.norm.weight.normal_(1, 0.3)
            block.norm.bias.normal_(0, 0.3)
    result = surgeon.apply(model, [surgeon.ir.FoldNorms()], example_inputs=(torch.randn(4, 16),),
                           dim_names=(("batch", None),))
    x = torch.randn(8, 16)
    torch.testing.assert_close(result.module(x), model(x), atol=1e-5, rtol=1e-5)
    assert result.report.fidelity["rel_error"] < 1e-6


def test_a_post_norm_encoder_is_refused_with_the_reason(bert_dir: Path) -> None:
    with pytest.raises(UserError, match=r"no norm can be folded: .*LayerNorm's output also "
                                        r"feeds add.* post-norm"):
        surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\nfold norms\n')


def test_folding_twice_changes_nothing_the_second_time(decoder_dir: Path) -> None:
    loaded = _perturbed(decoder_dir)
    spec = surgeon.parse_spec('model hf "x"\ncalibrate text builtin samples 8 seqlen 16\n'
                              'fold norms\nfold norms\n')
    first, second = compile_spec(spec, loaded, allow_outside=True).report.steps
    assert first.modified and not second.modified and not second.layers
