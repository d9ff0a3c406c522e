"""rotate residual: exact (max |dlogits| / max |logits| <= 1e-5 in float32) after fold
norms on the decoder families, for both rotations; reloads as transformers' own class;
refused without fold norms, on post-norm encoders and on LayerNorm models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.driver import compile_spec
from surgeon.passes.rotate_residual import pca_rotation, random_rotation
from surgeon.sources import load_hf
from tests.conftest import DECODERS, make_decoder
from tests.passes.test_fold_norms import _perturbed

HEAD = 'model hf "x"\ncalibrate text builtin samples 8 seqlen 32\n'


def _relative_drift(result, loaded) -> float:
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
        got = result.module(*batch.inputs)
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("method", ["hadamard", "orthogonal seed 7", "pca"])
@pytest.mark.parametrize("family", sorted(DECODERS))
def test_exact_on_decoders(family: str, method: str, tmp_path: Path) -> None:
    loaded = _perturbed(make_decoder(tmp_path / family, family))
    before = {n: p.detach().clone() for n, p in loaded.module.named_parameters()}
    spec = surgeon.parse_spec(HEAD + f"fold norms\nrotate residual {method}\n")
    result = compile_spec(spec, loaded, allow_outside=True)
    assert _relative_drift(result, loaded) <= 1e-5
    rotate = result.report.steps[1]
    notes = [lp.note for lp in rotate.layers]
    # embedding + (q, k, v, gate, up) per layer + lm_head read; (o, down) per layer write
    assert notes.count("embedding: E Q") == 1
    assert notes.count("writes the stream: Q^T W") == 2 * 2
    assert notes.count("reads the stream: W Q") == 5 * 2 + 1  # tied: untied by fold norms
    after = dict(result.module.named_parameters())
    q_proj = next(p for n, p in after.items() if n.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.allclose(q_proj, before["model.layers.0.self_attn.q_proj.weight"])


def test_pca_rotation_diagonalises_the_gram_by_falling_variance() -> None:
    x = torch.randn(500, 12, dtype=torch.float64) * torch.linspace(0.1, 3, 12)
    gram = x.T @ x
    q = pca_rotation(12, 0, gram)
    torch.testing.assert_close(q.T @ q, torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
    d = q.T @ gram @ q
    torch.testing.assert_close(d, torch.diag(d.diagonal()), atol=1e-8, rtol=0)
    assert bool((d.diagonal()[:-1] >= d.diagonal()[1:]).all())
    np_values = np.sort(np.linalg.eigvalsh(gram.numpy()))[::-1]
    np.testing.assert_allclose(d.diagonal().numpy(), np_values, rtol=1e-9)


def test_random_rotations_are_orthogonal_and_seeded() -> None:
    q = random_rotation(48, 3)
    torch.testing.assert_close(q.T @ q, torch.eye(48, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(random_rotation(48, 3), q, atol=0, rtol=0)
    assert not torch.allclose(random_rotation(48, 4), q)


def test_rotated_model_reloads_in_transformers(decoder_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    loaded = _perturbed(decoder_dir)
    spec = surgeon.parse_spec(HEAD + 'fold norms\nrotate residual hadamard\n'
                              f'save hf "{tmp_path}/hf"\n')
    result = compile_spec(spec, loaded, allow_outside=True)
    model = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=batch.inputs[0],
                                         attention_mask=batch.inputs[1]).logits,
                                   result.module(*batch.inputs), atol=1e-5, rtol=1e-5)
        unrotated = load_hf(decoder_dir).module.model.embed_tokens.weight
    assert not torch.allclose(model.model.embed_tokens.weight, unrotated)


def test_needs_folded_norms(decoder_dir: Path) -> None:
    loaded = _perturbed(decoder_dir)
    with pytest.raises(UserError, match="still has its learned scale.*"):
        compile_spec(surgeon.parse_spec(HEAD + "rotate residual hadamard\n"), loaded,
                     allow_outside=True)


def test_post_norm_encoders_are_refused(bert_dir: Path) -> None:
    with pytest.raises(UserError, match=r"post-norm model: .*LayerNorm's output is the "
                                        r"residual stream itself.*cannot be exact"):
        surgeon.compile(f'model hf "{bert_dir}"\ncalibrate text builtin samples 8\n'
                        'rotate residual orthogonal\n')


def test_unsupported_hadamard_sizes_name_the_nearest(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=259, hidden_size=50, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=5,
                                   max_position_embeddings=64, pad_token_id=258)
    d = make_decoder(tmp_path / "d", "llama")  # for its tokenizer files
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    with pytest.raises(UserError, match=r"size 50: .*nearest: 48 or 52.*'orthogonal'"):
        surgeon.compile(f'model hf "{d}"\ncalibrate text builtin samples 8\nfold norms\n'
                        'rotate residual hadamard\n')
