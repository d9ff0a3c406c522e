"""slice residual (SliceGPT): with every basis kept whole the rewrite is an exact rotation
(computational invariance), on the decoder families; sliced, the stream narrows to k
dims with the parameter count of the formula, runs in onnxruntime and reloads; refused
where its bases would not commute with the norms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import surgeon
from surgeon.diagnostics import UserError
from surgeon.driver import compile_spec
from surgeon.passes.rotate_residual import random_rotation
from surgeon.passes.slice_residual import slice_stream
from surgeon.residual import find_stream
from surgeon.rewrite import finish
from tests.conftest import DECODERS, make_decoder
from tests.passes.test_fold_norms import _perturbed

HEAD = 'model hf "x"\ncalibrate text builtin samples 16 seqlen 32\n'


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_whole_bases_are_an_exact_rotation(family: str, tmp_path: Path) -> None:
    loaded = _perturbed(make_decoder(tmp_path / family, family))
    result = compile_spec(surgeon.parse_spec(HEAD + "fold norms\n"), loaded,
                          allow_outside=True)
    gm, prefix = result.captured.gm, result.captured.prefix
    stream = find_stream(gm, prefix, "test")
    d = gm.get_parameter(stream.embedding.args[0].target).shape[1]
    bases = [random_rotation(d, j) for j in range(len(stream.segments))]  # one per segment
    slice_stream(gm, stream, bases, prefix)
    finish(gm)
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1]).logits
        got = gm(*batch.inputs)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert len(stream.segments) == 2 * 2 + 1  # embedding, then attention and MLP adds


@pytest.mark.parametrize("family", ["llama", "llama-tied", "qwen2"])
def test_slicing_narrows_the_stream(family: str, tmp_path: Path) -> None:
    d, layers, vocab = 32, 2, 259
    k = d - round(d * 0.25)
    loaded = _perturbed(make_decoder(tmp_path / family, family))
    spec = HEAD + (f'fold norms\nslice residual 25%\nexport onnx "{tmp_path}/m.onnx"\n'
                   f'save "{tmp_path}/ckpt"\n')
    result = compile_spec(surgeon.parse_spec(spec), loaded, allow_outside=True)
    params = dict(result.module.named_parameters())
    lookup = next(n for n in result.module.graph.nodes
                  if n.target == torch.ops.aten.embedding.default)
    assert result.module.get_parameter(lookup.args[0].target).shape == (vocab, k)
    skips = [p for n, p in params.items() if n.startswith("surgeon_slice_skip_")]
    assert len(skips) == 2 * layers and all(p.shape == (k, k) for p in skips)
    before, after = result.report.params_before, result.report.params_after
    n_in = sum(lp.params_before - lp.params_after for s in result.report.steps
               for lp in s.layers)
    assert before - after == n_in  # the report's per-layer figures add up
    batch = result.captured.data.heldout[0]
    with torch.no_grad():
        want = result.module(*batch.inputs)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": batch.inputs[0].numpy(),
                             "attention_mask": batch.inputs[1].numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(surgeon.load(tmp_path / "ckpt")(*batch.inputs), want)
    f = result.report.fidelity
    assert np.isfinite(f["perplexity"]) and f["top1"] > 0.3


def test_needs_folded_norms(decoder_dir: Path) -> None:
    with pytest.raises(UserError, match="still has its learned scale"):
        compile_spec(surgeon.parse_spec(HEAD + "slice residual 25%\n"), _perturbed(decoder_dir),
                     allow_outside=True)


def test_the_share_must_leave_something(tmp_path: Path) -> None:
    with pytest.raises(surgeon.SpecError if hasattr(surgeon, "SpecError") else Exception,
                       match="between 0% and 100%"):
        surgeon.parse_spec('model "bytellama"\nslice residual 100%\n')
