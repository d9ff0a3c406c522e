"""rotate heads: exact on the decoder families (grouped-query attention, Qwen2's value
bias) and on a post-norm BERT (it does not depend on norm placement), alone and after
the residual rotation; v_proj and o_proj really change, as the formula says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.driver import compile_spec
from surgeon.hadamard import hadamard_matrix
from surgeon.sources import load_hf
from tests.conftest import DECODERS, make_decoder
from tests.passes.test_fold_norms import _perturbed

HEAD = 'model hf "x"\ncalibrate text builtin samples 8 seqlen 32\n'


@pytest.mark.parametrize("steps", ["rotate heads", "fold norms\nrotate residual hadamard\n"
                                   "rotate heads"])
@pytest.mark.parametrize("family", sorted(DECODERS))
def test_exact_on_decoders(family: str, steps: str, tmp_path: Path) -> None:
    loaded = _perturbed(make_decoder(tmp_path / family, family))
    result = compile_spec(surgeon.parse_spec(HEAD + steps + "\n"), loaded, allow_outside=True)
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
        got = result.module(*batch.inputs)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_weights_follow_the_formula(decoder_dir: Path) -> None:
    loaded = load_hf(decoder_dir)
    attn = loaded.module.model.layers[0].self_attn
    head = attn.head_dim
    h = hadamard_matrix(head)
    result = compile_spec(surgeon.parse_spec(HEAD + "rotate heads\n"), loaded,
                          allow_outside=True)
    params = dict(result.module.named_parameters())
    wv = params["model.model.layers.0.self_attn.v_proj.weight"].double()
    wo = params["model.model.layers.0.self_attn.o_proj.weight"].double()
    want_v = torch.block_diag(*[h.T] * (wv.shape[0] // head)) @ attn.v_proj.weight.double()
    want_o = attn.o_proj.weight.double() @ torch.block_diag(*[h] * (wo.shape[1] // head))
    torch.testing.assert_close(wv, want_v, atol=1e-6, rtol=0)
    torch.testing.assert_close(wo, want_o, atol=1e-6, rtol=0)


def test_exact_on_a_post_norm_encoder(tiny_bert) -> None:
    result = surgeon.compile('model "minilm"\ncalibrate text builtin samples 8 seqlen 16\n'
                             'rotate heads\n', model=tiny_bert.module)
    assert result.report.fidelity["rel_error"] <= 1e-5
    assert len(result.report.steps[0].layers) == 2 * 2  # (value, output.dense) per layer


def test_models_without_attention_are_refused(toy_models_on_path) -> None:
    with pytest.raises(UserError, match="no scaled_dot_product_attention"):
        surgeon.compile('model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
                        'rotate heads\n', trust_code=True)
