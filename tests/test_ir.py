"""The IR: round trips through text, YAML and JSON, immutability, spans, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from surgeon import ir
from surgeon.diagnostics import UserError
from surgeon.parse import load_spec, parse_spec

# Every statement and option between these specs.
RICH = """\
# the demo, with everything switched on
model "minilm"
calibrate text "data/calib.txt" samples 16 seqlen 32 seed 7

factorize "encoder.layer.*.attention.self.{query,key}" params 50%
factorize "encoder.layer.{0,5}.intermediate.dense" rank 8 method svd
factorize "**.output.dense" energy 0.95   # keep 95% of the energy
verify cosine >= 0.98
verify embedding_cosine >= 0.97
verify rel_error <= 0.05
export onnx "out/model.onnx" opset 20
save "out/ckpt"
"""
HF = """\
model hf "org/some-model"
calibrate text builtin samples 4
factorize "model.layers.*.mlp.{up,down}_proj" params 12.5%
verify rel_error <= 1e-05
export onnx "out/hf.onnx"
"""
PYTHON = """\
model python "toy_models:make_mlp"
input "x" float32[batch, 16]
input "mask" bool[batch, 16]
calibrate random samples 4 seqlen 16 seed 3
factorize "**" rank 2
verify cosine >= 0.5
save "out/toy"
"""
SURGERY = """\
model "minilm"
calibrate text builtin samples 8
prune layers "encoder.layer" remove 1 by angular
adapter lora "**.query" rank 8 alpha 16 dropout 0.05 init pissa
adapter dora "**.value" rank 4 alpha 8 init eva rho 2.5
adapter load "peft/dir"
fold
report "out/report"
save hf "out/hf"
save adapters "out/ad"
"""
SPECS = {"rich": RICH, "hf": HF, "python": PYTHON, "surgery": SURGERY}


@pytest.fixture(params=list(SPECS), ids=list(SPECS))
def text(request: pytest.FixtureRequest) -> str:
    return SPECS[request.param]


def test_rich_spec_builds_expected_ir() -> None:
    spec = parse_spec(RICH)
    assert spec == ir.Spec(
        model=ir.ModelSource(source="embedded", ref="minilm"),
        calibrate=ir.Calibrate(corpus="file", path="data/calib.txt", samples=16, seqlen=32,
                               seed=7),
        steps=(
            ir.Factorize(target="encoder.layer.*.attention.self.{query,key}",
                         rank=ir.ParamsFraction(percent=50.0)),
            ir.Factorize(target="encoder.layer.{0,5}.intermediate.dense", rank=ir.Rank(value=8)),
            ir.Factorize(target="**.output.dense", rank=ir.Energy(fraction=0.95)),
        ),
        checks=(
            ir.Verify(metric="cosine", op=">=", threshold=0.98),
            ir.Verify(metric="embedding_cosine", op=">=", threshold=0.97),
            ir.Verify(metric="rel_error", op="<=", threshold=0.05),
        ),
        outputs=(ir.ExportOnnx(path="out/model.onnx", opset=20), ir.Save(path="out/ckpt")),
    )


def test_python_spec_inputs_and_defaults() -> None:
    spec = parse_spec(PYTHON)
    assert spec.model == ir.ModelSource(source="python", ref="toy_models:make_mlp")
    assert spec.inputs == (ir.InputSig(name="x", dtype="float32", shape=("batch", 16)),
                           ir.InputSig(name="mask", dtype="bool", shape=("batch", 16)))
    assert spec.calibrate == ir.Calibrate(corpus="random", samples=4, seqlen=16, seed=3)
    hf = parse_spec(HF)
    assert hf.outputs == (ir.ExportOnnx(path="out/hf.onnx", opset=18),)
    assert hf.calibrate == ir.Calibrate(samples=4, seqlen=128, seed=0)
    assert hf.checks[0].threshold == 1e-05


def test_equality_is_about_content() -> None:
    spec = parse_spec(RICH)
    assert spec != parse_spec(RICH.replace("rank 8", "rank 9"))
    assert spec != parse_spec(RICH.replace("seed 7", "seed 8"))
    moved = parse_spec("\n\n# moved down\n" + RICH)
    assert moved.model.span != spec.model.span
    assert moved == spec and hash(moved) == hash(spec)


def test_text_round_trip(text: str) -> None:
    spec = parse_spec(text)
    canonical = spec.to_text()
    again = parse_spec(canonical)
    assert again == spec
    assert again.to_text() == canonical
    assert "#" not in canonical


def test_yaml_round_trip(text: str) -> None:
    spec = parse_spec(text)
    data = yaml.safe_load(spec.to_yaml())
    assert data["model"]["ref"] == spec.model.ref
    assert ir.Spec.model_validate(data) == spec


def test_yaml_shape_of_rich_spec() -> None:
    data = yaml.safe_load(parse_spec(RICH).to_yaml())
    assert [s["rank"] for s in data["steps"]] == [
        {"kind": "params", "percent": 50.0},
        {"kind": "rank", "value": 8},
        {"kind": "energy", "fraction": 0.95},
    ]
    assert data["outputs"] == [{"kind": "export_onnx", "path": "out/model.onnx", "opset": 20},
                               {"kind": "save", "path": "out/ckpt"}]


def test_load_surg_yaml_json_agree(text: str, tmp_path: Path) -> None:
    spec = parse_spec(text)
    dumped = spec.model_dump(mode="json")
    files = {
        "s.surg": text,
        "s.yaml": spec.to_yaml(),
        "s.yml": yaml.safe_dump(dumped),
        "s.json": json.dumps(dumped, indent=2),
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        loaded = load_spec(path)
        assert loaded == spec, name
        assert loaded.source_file == str(path)


def _has_key(obj: Any, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(_has_key(v, key) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_key(v, key) for v in obj)
    return False


def test_spans_on_parsed_nodes() -> None:
    spec = parse_spec(RICH)
    assert spec.model.span is not None and spec.model.span.line == 2
    assert spec.model.span.column == 1
    assert spec.calibrate.span is not None and spec.calibrate.span.line == 3
    assert [s.span.line for s in spec.steps if s.span] == [5, 6, 7]
    assert [c.span.line for c in spec.checks if c.span] == [8, 9, 10]
    assert [o.span.line for o in spec.outputs if o.span] == [11, 12]
    rank = spec.steps[1].rank.span  # `rank 8` on line 6
    assert rank is not None and (rank.line, rank.column) == (6, 52)
    assert (rank.end_line, rank.end_column) == (6, 58)


def test_spans_are_not_dumped() -> None:
    spec = parse_spec(RICH)
    assert not _has_key(spec.model_dump(), "span")
    assert not _has_key(spec.model_dump(mode="json"), "span")
    assert not _has_key(yaml.safe_load(spec.to_yaml()), "span")
    assert "source_file" not in spec.model_dump()
    assert "kind" in spec.model_dump()["steps"][0]


def test_nodes_are_frozen() -> None:
    spec = parse_spec(RICH)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.model = ir.ModelSource(source="hf", ref="x")  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.steps[0].rank.percent = 10.0  # type: ignore[union-attr]
    with pytest.raises(AttributeError):
        spec.steps.append(spec.steps[0])  # type: ignore[attr-defined]
    assert spec.steps[0].rank == ir.ParamsFraction(percent=50.0)


@pytest.mark.parametrize(("cls", "fields"), [
    (ir.Rank, {"value": 4, "bogus": 1}),
    (ir.Save, {"path": "x", "opset": 18}),
    (ir.Verify, {"metric": "cosine", "op": ">=", "threshold": 0.9, "tolerance": 0.1}),
    (ir.Span, {"line": 1, "column": 1, "end_line": 1, "end_column": 2, "file": "x"}),
])
def test_extra_fields_are_forbidden(cls: type[pydantic.BaseModel], fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        cls(**fields)


def test_extra_field_in_nested_dict_is_forbidden() -> None:
    data = parse_spec(RICH).model_dump(mode="json")
    data["steps"][1]["rank"]["unit"] = "x"
    with pytest.raises(pydantic.ValidationError):
        ir.Spec.model_validate(data)


@pytest.mark.parametrize(("mutate", "field_path", "detail"), [
    (lambda d: d["checks"][0].update(metric="cosin"), "checks.0.metric", "cosin"),
    (lambda d: d["steps"][2].update(bogus=1), "steps.2.factorize.bogus", "Extra inputs"),
    (lambda d: d["outputs"][0].update(opset=3), "outputs.0.export_onnx.opset", "opset 3"),
    (lambda d: d["steps"][0]["rank"].update(percent=150),
     "steps.0.factorize.rank.params.percent", "150"),
    (lambda d: d["model"].update(source="zip"), "model.source", "embedded"),
])
def test_load_yaml_with_invalid_field(tmp_path: Path, mutate: Any, field_path: str,
                                      detail: str) -> None:
    data = parse_spec(RICH).model_dump(mode="json")
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert f"{path}: {field_path}:" in info.value.message
    assert detail in info.value.message


def test_load_unreadable_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read spec"):
        load_spec(tmp_path / "missing.surg")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid YAML"):
        load_spec(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'model': 1}", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_spec(bad_json)


def test_json_schema_discriminators() -> None:
    schema = ir.Spec.model_json_schema()
    outputs = schema["properties"]["outputs"]["items"]
    assert outputs["discriminator"]["propertyName"] == "kind"
    assert set(outputs["discriminator"]["mapping"]) == {"export_onnx", "save", "save_hf",
                                                       "save_adapters", "report"}
    steps = schema["properties"]["steps"]["items"]
    assert set(steps["discriminator"]["mapping"]) == {"factorize", "prune_layers", "adapter",
                                                       "adapter_load", "fold", "fold_norms",
                                                       "rotate_residual", "rotate_heads",
                                                       "rotate_inputs", "slice_residual",
                                                       "sparsify", "kernels"}
    rank = schema["$defs"]["Factorize"]["properties"]["rank"]
    assert rank["discriminator"]["propertyName"] == "kind"
    assert set(rank["discriminator"]["mapping"]) == {"rank", "params", "energy", "budget"}
    assert schema["$defs"]["Rank"]["additionalProperties"] is False


def test_unknown_rank_kind_is_rejected() -> None:
    data = parse_spec(RICH).model_dump(mode="json")
    data["steps"][0]["rank"] = {"kind": "ratio", "percent": 50}
    with pytest.raises(pydantic.ValidationError, match="ratio"):
        ir.Spec.model_validate(data)
