"""rotate inputs: an online Hadamard before each matched linear, its inverse folded into
the weight; exact on the decoder families' down_proj and on a post-norm BERT's FFN
output, with the op in the graph and the weight W H^T."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.driver import compile_spec
from surgeon.hadamard import hadamard_matrix
from surgeon.kernels.hadamard import OP
from surgeon.sources import load_hf
from tests.conftest import DECODERS, make_decoder

HEAD = 'model hf "x"\ncalibrate text builtin samples 8 seqlen 32\n'


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_exact_on_down_proj(family: str, tmp_path: Path) -> None:
    loaded = load_hf(make_decoder(tmp_path / family, family))
    down = loaded.module.model.layers[0].mlp.down_proj.weight.detach().double()
    spec = surgeon.parse_spec(HEAD + 'rotate inputs "model.layers.*.mlp.down_proj"\n')
    result = compile_spec(spec, loaded, allow_outside=True)
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
        got = result.module(*batch.inputs)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert [n.target for n in result.module.graph.nodes].count(OP) == 2  # one per layer
    w = dict(result.module.named_parameters())["model.model.layers.0.mlp.down_proj.weight"]
    torch.testing.assert_close(w.double(), down @ hadamard_matrix(down.shape[1]).T,
                               atol=1e-6, rtol=0)
    (step,) = result.report.steps
    assert all(lp.flops_after > lp.flops_before for lp in step.layers)


def test_exact_on_a_post_norm_encoder(tiny_bert) -> None:
    result = surgeon.compile('model "minilm"\ncalibrate text builtin samples 8 seqlen 16\n'
                             'rotate inputs "encoder.layer.*.output.dense"\n',
                             model=tiny_bert.module)
    assert result.report.fidelity["rel_error"] <= 1e-5


def test_sizes_without_a_hadamard_matrix_are_refused(toy_models_on_path) -> None:
    with pytest.raises(UserError, match=r"rotate inputs: down: no Hadamard transform of size "
                                        r"50: .*nearest: 48 or 52"):
        surgeon.compile('model python "toy_models:odd_mlp"\ninput "x" float32[batch, 10]\n'
                        'rotate inputs "down"\n', trust_code=True)
