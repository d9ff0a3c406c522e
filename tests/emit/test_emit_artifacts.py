"""ONNX and checkpoint emitters on a text model (the 2-layer tiny BERT: MiniLM's
architecture and tokenizer, narrower): onnxruntime parity, reload parity, integrity
checks, byte-for-byte reproducibility and atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import surgeon
from surgeon import atomic
from surgeon.diagnostics import UserError

SPEC = """model hf "{model}"
calibrate text builtin samples 16 seqlen 64 seed 3
factorize "encoder.layer.*.attention.self.{{query,key}}" params 50%
export onnx "model.onnx" opset 18
save "ckpt"
"""


def _compile(out: Path, model: Path):
    """Compile SPEC with `out` as the working directory (relative output paths)."""
    cwd = os.getcwd()
    os.chdir(out)
    try:
        return surgeon.compile(SPEC.format(model=model))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, bert_dir: Path):
    out = tmp_path_factory.mktemp("artifacts")
    return out, _compile(out, bert_dir)


def _batch(loaded, n: int, words: int):
    texts = [" ".join(["token"] * (words + i)) + f" sample {i}" for i in range(n)]
    enc = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_onnx_matches_torch_in_onnxruntime_at_new_shapes(compiled, tiny_bert) -> None:
    out, result = compiled
    artifact = next(a for a in result.report.artifacts if a.kind == "onnx")
    assert artifact.ort_max_abs_diff is not None and artifact.ort_max_abs_diff <= 1e-4
    path = out / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}
    dims = [[d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["batch", "seq"], ["batch", "seq"]]
    ids, mask = _batch(tiny_bert, 3, 37)  # neither the export nor the check shape
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = result.module(ids, mask).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_checkpoint_reloads_without_the_spec(compiled, tiny_bert) -> None:
    out, result = compiled
    module = surgeon.load(out / "ckpt")
    ids, mask = _batch(tiny_bert, 2, 20)
    with torch.no_grad():
        torch.testing.assert_close(module(ids, mask), result.module(ids, mask), atol=0, rtol=0)
    manifest = json.loads((out / "ckpt" / "manifest.json").read_text())
    assert manifest["params"] == result.report.params_after
    assert {"model.pt2", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])


def test_tampered_checkpoint_is_refused(compiled, tmp_path: Path) -> None:
    out, _ = compiled
    copy = tmp_path / "ckpt"
    shutil.copytree(out / "ckpt", copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        surgeon.load(copy)


def test_pickled_payloads_are_refused(compiled, tmp_path: Path) -> None:
    out, _ = compiled
    copy = tmp_path / "ckpt"
    shutil.copytree(out / "ckpt", copy)
    src = copy / "model.pt2"
    patched = tmp_path / "patched.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(patched, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    os.replace(patched, src)
    manifest = json.loads((copy / "manifest.json").read_text())
    from surgeon.emit.checkpoint import _sha256

    manifest["files"]["model.pt2"] = _sha256(src)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="pickled"):
        surgeon.load(copy)


def test_same_spec_and_seed_give_the_same_bytes(compiled, bert_dir: Path, tmp_path: Path) -> None:
    out, _ = compiled
    _compile(tmp_path, bert_dir)
    for rel in ("model.onnx", "ckpt/model.pt2", "ckpt/model.safetensors",
                "ckpt/manifest.json"):
        a, b = (out / rel).read_bytes(), (tmp_path / rel).read_bytes()
        assert a == b, rel


def test_failed_writes_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "dir"
    with pytest.raises(RuntimeError), atomic.staged_dir(target) as d:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f.onnx").write_bytes(b"old")

    def disk_gone(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "fsync", disk_gone)
    with pytest.raises(OSError, match="disk gone"):
        atomic.write_bytes(tmp_path / "f.onnx", b"new")
    assert (tmp_path / "f.onnx").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx"]


def test_artifacts_follow_the_umask(compiled) -> None:
    out, _ = compiled
    mask = os.umask(0)
    os.umask(mask)
    for f in [out / "model.onnx", *(out / "ckpt").iterdir()]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_outputs_land_together_or_not_at_all(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from surgeon.diagnostics import UserError
    from surgeon.emit import registry
    from surgeon.ir import Report
    from surgeon.outputs import MARKER

    def fails(ctx, out):
        raise UserError("the last output fails")

    monkeypatch.setitem(registry._EMITTERS, Report, registry.Emitter(fails))
    (tmp_path / "ckpt").mkdir()  # an earlier surgeon output, so the compile may replace it
    (tmp_path / "ckpt" / MARKER).write_text("{}")
    (tmp_path / "ckpt" / "old.txt").write_text("kept")
    spec = ('model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
            'calibrate random samples 4\nfactorize "layers.0.up" rank 4\n'
            f'export onnx "{tmp_path / "new" / "deep" / "m.onnx"}"\n'
            f'save "{tmp_path / "ckpt"}"\n'
            f'report "{tmp_path / "report"}"\n')  # fails last, after the others are staged
    with pytest.raises(UserError, match="the last output fails"):
        surgeon.compile(spec, trust_code=True)
    # no file, no temp, and no directory made for them is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [MARKER, "old.txt"]
    with atomic.transaction():
        atomic.write_bytes(tmp_path / "a.bin", b"a")
        assert not (tmp_path / "a.bin").exists()  # staged until the block ends
    assert (tmp_path / "a.bin").read_bytes() == b"a"


def test_models_over_the_protobuf_limit_use_external_data(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A toy stack with 64 features (~300 KB of weights) stands in for a > 2 GB model:
    the limit is lowered, the path is the same."""
    from toy_models import Stack

    from surgeon.emit import onnx as emit_onnx
    from surgeon.ir import ExportOnnx, Factorize, Rank

    torch.manual_seed(0)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    result = surgeon.apply(Stack(d=64, hidden=128), [Factorize(target="layers.0.up",
                                                               rank=Rank(value=8))],
                           example_inputs=(x,), dim_names=(("batch", None),))
    limit = 1 << 16
    monkeypatch.setattr(emit_onnx, "PROTOBUF_LIMIT", limit)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "other.txt").write_text("kept")
    report = result.write([ExportOnnx(path=str(tmp_path / "m" / "model.onnx"))])[0]
    files = {p.name: p.stat().st_size for p in (tmp_path / "m").iterdir()}
    assert sorted(files) == ["model.onnx", "model.onnx.data", "other.txt"]
    assert files["model.onnx"] < limit < files["model.onnx.data"]  # weights in the sidecar
    assert report.bytes == files["model.onnx"] + files["model.onnx.data"]
    assert onnx.load(str(tmp_path / "m" / "model.onnx")).graph.initializer  # data resolves
    new = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))  # another batch size
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: new.numpy()})[0]
    with torch.no_grad():
        want = result.module(new).numpy()
    assert abs(got - want).max() <= 1e-4
    again = result.write([ExportOnnx(path=str(tmp_path / "again" / "model.onnx"))])[0]
    assert again.sha256 == report.sha256  # same graph, same bytes
