"""kernels triton: sparsify masks and the linears reading them become sparse_linear,
factorized pairs lowrank_linear; the compiled model computes what it did before the step
(torch), onnxruntime runs it alike and a saved checkpoint reloads it."""

from __future__ import annotations

from pathlib import Path

import torch

import surgeon
from surgeon.driver import compile_spec
from surgeon.kernels.lowrank_linear import OP as LOWRANK
from surgeon.kernels.sparse_linear import OP as SPARSE_LINEAR
from surgeon.kernels.sparsify import OP as SPARSIFY
from surgeon.sources import load_hf

HEAD = 'model hf "x"\ncalibrate text builtin samples 16 seqlen 64\n'
STEPS = ('factorize "model.layers.*.self_attn.{q,k}_proj" params 60% method svd_llm\n'
         'sparsify "model.layers.*.mlp.*" 40% by wina\n'
         'sparsify "model.layers.*.self_attn.o_proj" 30% by rsparse rank 2\n')


def _targets(result) -> list:
    return [n.target for n in result.module.graph.nodes]


def test_fused_ops_compute_what_the_unfused_graph_did(decoder_dir: Path, tmp_path: Path) -> None:
    plain = compile_spec(surgeon.parse_spec(HEAD + STEPS), load_hf(decoder_dir),
                         allow_outside=True)
    out = tmp_path / "out"
    fused = compile_spec(surgeon.parse_spec(
        HEAD + STEPS + f'kernels triton\nexport onnx "{out}/m.onnx"\nsave "{out}/ck"\n'),
        load_hf(decoder_dir), allow_outside=True)
    ops = _targets(fused)
    # per layer: gate, up, down read WINA masks (one each), o_proj an R-Sparse mask; its
    # low-rank path is a pair too, like q and k
    assert ops.count(SPARSE_LINEAR) == 2 * 4 and ops.count(LOWRANK) == 2 * 3
    assert SPARSIFY in ops  # R-Sparse's complement still reads its mask
    assert SPARSE_LINEAR not in _targets(plain) and LOWRANK not in _targets(plain)
    batch = fused.captured.data.heldout[0]
    with torch.no_grad():
        want, got = plain.module(*batch.inputs), fused.module(*batch.inputs)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        reloaded = surgeon.load(out / "ck")
        torch.testing.assert_close(reloaded(*batch.inputs), got, atol=0, rtol=0)
    onnx = next(a for a in fused.report.artifacts if a.kind == "onnx")
    assert onnx.ort_max_abs_diff <= 1e-4
    (step,) = [s for s in fused.report.steps if s.kind == "kernels"]
    assert step.modified and {lp.method for lp in step.layers} == {"sparse_linear",
                                                                   "lowrank_linear"}


def test_nothing_to_fuse_is_not_a_change(decoder_dir: Path) -> None:
    result = compile_spec(surgeon.parse_spec(HEAD + "kernels triton\n"), load_hf(decoder_dir),
                          allow_outside=True)
    assert not result.report.steps[0].modified and not result.report.steps[0].layers
