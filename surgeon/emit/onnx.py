"""ONNX emitter: re-export the compiled graph, convert with the torch.export-based
exporter, run the full onnx checker, compare onnxruntime against the compiled
torch graph, and only then move the file into place.

A model over protobuf's 2 GB limit is written with its weights as ONNX external
data in one sidecar file, `<name>.data` beside `<name>` (onnx.save_model's
save_as_external_data), and checked from disk, since neither the checker nor
onnxruntime can take such a model as one in-memory message.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from surgeon import atomic, ir
from surgeon.capture import Captured, quiet
from surgeon.corpus import Batch
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.kernels import DISCONTINUOUS_OPS, ONNX_LOWERINGS
from surgeon.outputs import ONNX_MARK
from surgeon.report import ArtifactReport

PROTOBUF_LIMIT = 2**31 - 1
# float32 kernels differ by ~1e-5 between torch and onnxruntime; more is a conversion bug.
# float16 rounds each op to 11 bits and the two runtimes order sums differently, so its
# bound is relative to the largest output (a few ulps there). onnxruntime's CPU provider
# has no bfloat16 kernels for most ops, so a bfloat16 model is refused before any work.
ORT_TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2}
# A graph holding a threshold (activation-sparsity masks) is discontinuous: float rounding
# that differs between onnxruntime and torch upstream of a mask flips the entries that
# sit on the threshold, and the flip carries on to later tokens. Such graphs are held to
# the relative error over real tokens (flips on bytellama at 40%: 0.25% with TEAL, 1.7%
# with WINA's 56 masks; each lowering alone is exact in tests/kernels; a wrong lowering
# is off by tens of percent), and the largest difference is reported beside it.
MASKED_REL_TOLERANCE = 5e-2
ONNX_DTYPES = ("float32", "float16")


def _name_dims(proto: onnx.ModelProto, captured: Captured) -> None:
    """The exporter names dynamic dims s0, s1...; give them the names users know."""
    rename: dict[str, str] = {}
    for value, names in zip(proto.graph.input, captured.data.dim_names, strict=True):
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=True):
            if name and dim.dim_param:
                rename[dim.dim_param] = name
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def to_onnx(captured: Captured, opset: int) -> onnx.ModelProto:
    ep = captured.reexport()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with quiet():
        program = torch.onnx.export(
            ep, dynamo=True, opset_version=opset, optimize=True, verbose=False,
            custom_translation_table=ONNX_LOWERINGS,
            input_names=list(captured.data.input_names), output_names=[captured.output_name],
        )
    proto = program.model_proto
    _name_dims(proto, captured)
    proto.doc_string = ONNX_MARK  # lets a later compile replace this file (surgeon/outputs.py)
    return proto


def _outputs(model_bytes: bytes | str, captured: Captured, batch: Batch
             ) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime's output, the compiled graph's), float64."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in zip(captured.data.input_names, batch.inputs,
                                                      strict=True)}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = captured.gm(*batch.inputs)
    return got.astype(np.float64), want.double().numpy()


def ort_max_abs_diff(model_bytes: bytes | str, captured: Captured, batch: Batch) -> float:
    got, want = _outputs(model_bytes, captured, batch)
    return float(np.max(np.abs(got - want)))


def ort_rel_error(got: np.ndarray, want: np.ndarray, batch: Batch) -> float:
    """||got - want|| / ||want|| over the real (unpadded) positions."""
    if batch.mask is not None and got.ndim >= 3 and got.shape[:2] == tuple(batch.mask.shape):
        real = batch.mask.numpy().astype(bool)
        got, want = got[real], want[real]
    return float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-30))


def has_thresholds(captured: Captured) -> bool:
    return any(n.target in DISCONTINUOUS_OPS for n in captured.gm.graph.nodes)


def ort_tolerance(captured: Captured, batch: Batch) -> float:
    with torch.no_grad():
        want = captured.gm(*batch.inputs)
    scale = 1.0 if want.dtype == torch.float32 else max(1.0, float(want.abs().max()))
    return ORT_TOLERANCE.get(want.dtype, ORT_TOLERANCE[torch.float32]) * scale


@register_emitter(ir.ExportOnnx, dtypes=ONNX_DTYPES)
def export_onnx(ctx: EmitContext, out: ir.ExportOnnx) -> ArtifactReport:
    t0 = time.perf_counter()
    captured = ctx.captured
    proto = to_onnx(captured, out.opset)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        return _export_external(proto, captured, out, ctx.path(out), t0)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    diff, rel = _check_parity(data, captured)
    atomic.write_bytes(ctx.path(out), data)
    return ArtifactReport(kind="onnx", path=out.path, bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), ort_max_abs_diff=diff,
                          ort_rel_error=rel, seconds=time.perf_counter() - t0)


def _export_external(proto: onnx.ModelProto, captured: Captured, out: ir.ExportOnnx,
                     path: Path, t0: float) -> ArtifactReport:
    with atomic.staged_files(path.parent) as d:
        staged = d / path.name
        onnx.save_model(proto, str(staged), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{path.name}.data",
                        size_threshold=1024)
        onnx.checker.check_model(str(staged), full_check=True)
        diff, rel = _check_parity(str(staged), captured)
        h, size = hashlib.sha256(), 0
        for f in (staged, d / f"{path.name}.data"):  # the model, then its weights
            data = f.read_bytes()
            h.update(data)
            size += len(data)
    return ArtifactReport(kind="onnx", path=out.path, bytes=size, sha256=h.hexdigest(),
                          ort_max_abs_diff=diff, ort_rel_error=rel,
                          seconds=time.perf_counter() - t0)


def _check_parity(model: bytes | str, captured: Captured) -> tuple[float, float | None]:
    """(max |diff|, relative error over real tokens, for graphs holding thresholds)."""
    batch = captured.data.heldout[0]
    got, want = _outputs(model, captured, batch)
    diff = float(np.max(np.abs(got - want)))
    if has_thresholds(captured):
        rel = ort_rel_error(got, want, batch)
        if not rel <= MASKED_REL_TOLERANCE:  # also catches NaN
            raise RuntimeError(f"onnxruntime output differs from the compiled torch graph by "
                               f"{rel:.3g} of its norm on real tokens (tolerance "
                               f"{MASKED_REL_TOLERANCE:g} for a graph with thresholds); "
                               "nothing was written")
        return diff, rel
    tolerance = ort_tolerance(captured, batch)
    if not diff <= tolerance:  # also catches NaN
        raise RuntimeError(f"onnxruntime output differs from the compiled torch graph by "
                           f"{diff:.3g} (tolerance {tolerance:g}); nothing was written")
    return diff, None
