"""Why rotate, measured (surgeon/outliers.py): the kurtosis and max|x|/rms observers equal
numpy's on the inputs transformers' own modules see, and a residual rotation of a model
with an outlier channel brings its readers' kurtosis down towards a Gaussian's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import surgeon
from surgeon.driver import compile_spec
from surgeon.sources import load_hf

HEAD = 'model hf "x"\ncalibrate text builtin samples 16 seqlen 32\n'


def _q_proj_inputs(loaded, batches) -> np.ndarray:
    seen = []
    hook = loaded.module.model.layers[0].self_attn.q_proj.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach()))
    rows = []
    with torch.no_grad():
        for batch in batches:
            seen.clear()
            loaded.module(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
            rows.append(seen[0][batch.mask].double().numpy())
    hook.remove()
    return np.concatenate(rows)


def test_measures_match_numpy_on_the_inputs_transformers_sees(decoder_dir: Path) -> None:
    loaded = load_hf(decoder_dir)
    result = compile_spec(surgeon.parse_spec(HEAD + "rotate heads\n"), loaded,
                          allow_outside=True)
    x = _q_proj_inputs(loaded, result.captured.data.calibration)
    kurt = np.mean(np.mean(x**4, 1) / np.mean(x**2, 1) ** 2)
    peak = np.mean(np.abs(x).max(1) / np.sqrt(np.mean(x**2, 1)))
    # rotate heads reports v_proj (same input as q_proj) before and after: unchanged there
    (v_proj,) = [lp for lp in result.report.steps[0].layers
                 if lp.path == "model.layers.0.self_attn.v_proj"]
    assert v_proj.detail.kurtosis_before == pytest.approx(kurt, rel=1e-9)
    assert v_proj.detail.peak_ratio_before == pytest.approx(peak, rel=1e-9)
    assert v_proj.detail.kurtosis_after == pytest.approx(kurt, rel=1e-6)


def test_rotation_spreads_an_outlier_channel(decoder_dir: Path) -> None:
    loaded = load_hf(decoder_dir)
    with torch.no_grad():
        loaded.module.model.embed_tokens.weight[:, 5] *= 30  # one massive channel
    result = compile_spec(surgeon.parse_spec(HEAD + "fold norms\nrotate residual hadamard\n"),
                          loaded, allow_outside=True)
    readers = [lp.detail for lp in result.report.steps[1].layers
               if lp.note == "reads the stream: W Q" and "layers.0." in lp.path]
    assert readers
    for d in readers:
        assert d.kurtosis_before > 10 and d.kurtosis_after < d.kurtosis_before / 3
        assert d.peak_ratio_after < d.peak_ratio_before
