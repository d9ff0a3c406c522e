"""Model directories from strangers (surgeon.sources.load_hf) and NaN/Inf anywhere:
safetensors only (index included), no links out of the directory, every tensor present
with the shape the config says and none left over, bad files named in a UserError
(exit 2); non-finite weights refused, non-finite parameters made by a pass reported
as that pass's failure, reports valid JSON whatever the numbers."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import make_llama
from toy_models import tiny_mlp  # tests/ is on sys.path (conftest rootdir)

import surgeon
from surgeon.cli import main
from surgeon.diagnostics import EXIT_USER, PassError, UserError
from surgeon.ir import Factorize, Rank
from surgeon.json_safe import json_safe
from surgeon.report import ArtifactReport, CompileReport
from surgeon.sources import load_hf


class Payload:
    """Unpickling this creates the marker file: code run from the model directory."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_file(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama (hidden 32) with MiniLM's tokenizer files."""
    return make_llama(tmp_path_factory.mktemp("llama") / "base", layers=2, hidden=32)


def _copy(base: Path, tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(base, d, symlinks=True)
    return d


def _config(d: Path, **changes) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config))


def _state(d: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(d / "model.safetensors"))


def _save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    safetensors.torch.save_file(state, str(path), metadata={"format": "pt"})


def _refused(d: Path, *fragments: str) -> UserError:
    with pytest.raises(UserError) as info:
        load_hf(d)
    assert info.value.exit_code == EXIT_USER
    for fragment in fragments:
        assert fragment in info.value.format(), info.value.format()
    return info.value


def _shard(d: Path, target_of) -> dict[str, str]:
    """Replace model.safetensors by an index whose weight_map sends each tensor to
    target_of(name); returns the map."""
    state = _state(d)
    (d / "model.safetensors").unlink()
    weight_map = {name: target_of(name) for name in state}
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_the_tiny_llama_loads(base: Path) -> None:
    loaded = load_hf(base)
    assert loaded.tokenizer is not None and len(loaded.module.layers) == 2


def test_minilm_loads_with_its_tied_and_ignored_tensors(minilm) -> None:
    """MiniLM has position_ids buffers and a pooler; nothing counts as missing."""
    assert minilm.module.config.num_hidden_layers == 6


# --- safetensors only ------------------------------------------------------------


def test_sharded_safetensors_load(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    state = _state(d)
    names = sorted(state)
    half = len(names) // 2
    weight_map = _shard(d, lambda n: "a.safetensors" if names.index(n) < half
                        else "b.safetensors")
    for shard in ("a.safetensors", "b.safetensors"):
        _save_state(d / shard, {n: state[n] for n, f in weight_map.items() if f == shard})
    loaded = load_hf(d)
    torch.testing.assert_close(loaded.module.norm.weight, state["norm.weight"])


def test_index_pointing_at_a_pickle_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    marker = tmp_path / "pwned"
    _shard(d, lambda n: "pytorch_model.bin")
    _pickle_file(d / "pytorch_model.bin", marker)
    _refused(d, "pytorch_model.bin", "not a .safetensors file")
    assert not marker.exists()


@pytest.mark.parametrize("target", ["../outside.safetensors", "sub/model.safetensors",
                                    "/tmp/model.safetensors", "missing.safetensors",
                                    "model.pt", "model.ckpt", "", 3])
def test_index_targets_must_be_safetensors_in_the_directory(base: Path, tmp_path: Path,
                                                            target) -> None:
    d = _copy(base, tmp_path)
    state = _state(d)
    (tmp_path / "outside.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    (d / "sub").mkdir()
    _save_state(d / "sub" / "model.safetensors", state)
    _shard(d, lambda n: target)
    _refused(d, "model.safetensors.index.json")


def test_index_beside_the_weights_is_checked_too(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"norm.weight": "pytorch_model.bin"}}))
    _refused(d, "not a .safetensors file")


@pytest.mark.parametrize("index", [[], {"weight_map": []}, {"weight_map": {}}, {"x": 1}])
def test_malformed_index_is_refused(base: Path, tmp_path: Path, index) -> None:
    d = _copy(base, tmp_path)
    _shard(d, lambda n: "model.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(d, "model.safetensors.index.json")


def test_index_must_name_the_shard_that_holds_a_tensor(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    state = _state(d)
    _shard(d, lambda n: "a.safetensors")
    _save_state(d / "a.safetensors", {"norm.weight": state["norm.weight"]})
    _refused(d, "does not hold it")


def test_pickled_weights_beside_safetensors_are_never_read(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("pytorch_model.bin", "model.pt", "model.pth", "model.pkl", "model.ckpt"):
        _pickle_file(d / name, marker)
    load_hf(d)
    assert not marker.exists()


def test_pickled_weights_alone_are_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    marker = tmp_path / "pwned"
    (d / "model.safetensors").unlink()
    _pickle_file(d / "pytorch_model.bin", marker)
    _refused(d, "no model.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["adapter_model.bin", "pytorch_model.bin", "../x.safetensors",
                                  "other.safetensors"])
def test_config_cannot_name_other_weights(base: Path, tmp_path: Path, name: str) -> None:
    """transformers_weights in config.json picks the weights file (adapter_model.bin too)."""
    d = _copy(base, tmp_path)
    marker = tmp_path / "pwned"
    _pickle_file(d / "adapter_model.bin", marker)
    _pickle_file(d / "pytorch_model.bin", marker)
    _config(d, transformers_weights=name)
    _refused(d, "transformers_weights")
    assert not marker.exists()


def test_a_peft_adapter_directory_is_refused(base: Path, tmp_path: Path) -> None:
    """transformers would load adapter_model.bin (a pickle) from beside the model."""
    d = _copy(base, tmp_path)
    marker = tmp_path / "pwned"
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    _pickle_file(d / "adapter_model.bin", marker)
    _refused(d, "adapter_config.json", "adapter load")
    assert not marker.exists()


# --- links -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json",
                                  "vocab.txt", "tokenizer_config.json"])
def test_links_out_of_the_directory_are_refused(base: Path, tmp_path: Path, name: str) -> None:
    d = _copy(base, tmp_path)
    outside = tmp_path / f"outside-{name}"
    shutil.move(d / name, outside)
    (d / name).symlink_to(outside)
    _refused(d, name, "outside the model directory")


def test_linked_directory_out_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "extra").symlink_to(tmp_path, target_is_directory=True)
    _refused(d, "extra", "outside the model directory")


def test_broken_link_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "tokenizer.json").unlink()
    (d / "tokenizer.json").symlink_to(tmp_path / "gone.json")
    _refused(d, "tokenizer.json")


def test_links_inside_the_directory_are_fine(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "weights").mkdir()
    shutil.move(d / "model.safetensors", d / "weights" / "real.safetensors")
    (d / "model.safetensors").symlink_to(Path("weights") / "real.safetensors")
    load_hf(d)


def test_hugging_face_cache_layout_loads(base: Path, tmp_path: Path) -> None:
    """snapshots/<rev>/* link to ../../blobs/*: the one layout with links out."""
    repo = tmp_path / "models--tiny--llama"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in base.iterdir():
        shutil.copy(f, blobs / f.name)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / f.name)
    load_hf(snapshot)


# --- missing, unexpected and mismatched tensors -----------------------------------


def test_config_with_more_layers_than_weights_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    _config(d, num_hidden_layers=4)
    _refused(d, "not in the weights", "layers.2.")


def test_config_with_fewer_layers_than_weights_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    _config(d, num_hidden_layers=1)
    _refused(d, "no place in the model", "layers.1.")


def test_a_missing_tensor_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    state = _state(d)
    del state["layers.1.mlp.down_proj.weight"]
    _save_state(d / "model.safetensors", state)
    _refused(d, "layers.1.mlp.down_proj.weight")


@pytest.mark.parametrize("change", [{"intermediate_size": 128}, {"vocab_size": 1000},
                                    {"hidden_size": 64}])
def test_config_sizes_that_disagree_with_the_weights_are_refused(
        base: Path, tmp_path: Path, change: dict) -> None:
    d = _copy(base, tmp_path)
    _config(d, **change)
    _refused(d, "disagree", "in the weights but")


def _causal_lm(d: Path, tie: bool, layers: int = 2) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=tie)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.mark.parametrize("tie", [True, False])
def test_causal_lm_checkpoints_load_with_their_head(tmp_path: Path, tie: bool) -> None:
    """Tied: lm_head is not stored and is the embedding. Untied: lm_head is stored."""
    d = _causal_lm(tmp_path / "clm", tie)
    loaded = load_hf(d)
    model = loaded.module
    assert loaded.causal_lm and type(model).__name__ == "LlamaForCausalLM"
    stored = safetensors.torch.load_file(str(d / "model.safetensors"))
    torch.testing.assert_close(model.model.embed_tokens.weight,
                               stored["model.embed_tokens.weight"])
    assert ("lm_head.weight" in stored) == (not tie)
    head = stored["model.embed_tokens.weight" if tie else "lm_head.weight"]
    torch.testing.assert_close(model.lm_head.weight, head)


def test_causal_lm_with_extra_layers_is_still_refused(tmp_path: Path) -> None:
    d = _causal_lm(tmp_path / "clm", tie=False, layers=3)
    _config(d, num_hidden_layers=2)
    _refused(d, "no place in the model", "model.layers.2.")


# --- files that are not what they say ----------------------------------------------


def test_truncated_safetensors_is_refused(base: Path, tmp_path: Path) -> None:
    for keep in (0, 7, 100, 5000):
        d = _copy(base, tmp_path / str(keep))
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[:keep])
        _refused(d, "model.safetensors", "not a valid safetensors file")


def test_lying_safetensors_header_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[:8] = (n + 10**6).to_bytes(8, "little")
    (d / "model.safetensors").write_bytes(bytes(data))
    _refused(d, "model.safetensors", "not a valid safetensors file")


def test_safetensors_header_with_wrong_offsets_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start, end + 4]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (d / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    _refused(d, "not a valid safetensors file")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json"])
def test_json_files_that_are_not_json_are_refused(base: Path, tmp_path: Path, name: str) -> None:
    d = _copy(base, tmp_path)
    (d / name).write_text('{"model_type": "llama",\n  oops}')
    _refused(d, name, "not valid JSON", "line 2")


def test_config_that_is_not_an_object_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "config.json").write_text("[1, 2]")
    _refused(d, "config.json", "not a JSON object")


def test_config_with_nonsense_values_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    _config(d, hidden_size="wide")
    _refused(d, "cannot load transformers model")


def test_broken_tokenizer_is_refused(base: Path, tmp_path: Path) -> None:
    d = _copy(base, tmp_path)
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "Nope"}}))
    _refused(d, "tokenizer", "tokenizer.json")


def test_bad_model_directory_exits_2_from_the_cli(base: Path, tmp_path: Path, capsys) -> None:
    d = _copy(base, tmp_path)
    _config(d, intermediate_size=128)
    spec = tmp_path / "s.surg"
    spec.write_text(f'model hf "{d}"\ncalibrate text builtin samples 4\n')
    assert main(["plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "disagree" in err and "internal error" not in err and "Traceback" not in err
    assert main(["plan", str(spec), "--json"]) == 2
    obj = json.loads(capsys.readouterr().out)
    assert obj["exit_code"] == 2 and "disagree" in obj["error"]["message"]


# --- NaN and infinity --------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_on_load(base: Path, tmp_path: Path,
                                                value: float) -> None:
    d = _copy(base, tmp_path)
    state = _state(d)
    state["layers.1.mlp.up_proj.weight"][3, 4] = value
    _save_state(d / "model.safetensors", state)
    _refused(d, "NaN or infinite", "layers.1.mlp.up_proj.weight")


def _x() -> tuple[torch.Tensor]:
    return (torch.randn(4, 32),)


def test_non_finite_model_is_refused_by_the_python_api() -> None:
    model = tiny_mlp()
    with torch.no_grad():
        model.up.bias[0] = float("nan")
    with pytest.raises(UserError, match=r"NaN or infinite values in up\.bias"):
        surgeon.apply(model, [Factorize(target="up", rank=Rank(value=8))], example_inputs=_x())


class Masked(torch.nn.Module):
    """A linear and an additive mask buffer (-inf where masked), as attention masks are."""

    def __init__(self, fill: float):
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(32, 32)
        self.register_buffer("mask", torch.tensor([0.0, fill] * 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.up(x) + self.mask, dim=-1)


def test_infinite_mask_buffers_are_fine_but_nan_buffers_are_not() -> None:
    result = surgeon.apply(Masked(float("-inf")), [Factorize(target="up", rank=Rank(value=8))],
                           example_inputs=_x())
    assert result.report.steps[0].modified
    with pytest.raises(UserError, match="NaN or infinite values in mask"):
        surgeon.apply(Masked(float("nan")), [], example_inputs=_x())


def test_a_pass_that_makes_nan_fails_as_that_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import surgeon.driver as driver

    real = driver.pass_for

    class Poisoning:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def run(self, ctx, step):
            result = self.inner.run(ctx, step)
            with torch.no_grad():
                next(ctx.captured.gm.parameters()).view(-1)[0] = float("inf")
            return result

    monkeypatch.setattr(driver, "pass_for", lambda step: Poisoning(real(step)))
    with pytest.raises(PassError) as info:
        surgeon.apply(tiny_mlp(), [Factorize(target="up", rank=Rank(value=8))],
                      example_inputs=_x())
    assert info.value.pass_name == real(Factorize(target="up", rank=Rank(value=8))).name
    assert "NaN or infinite" in str(info.value)


def _overflowing_mlp() -> torch.nn.Module:
    """Finite weights whose activations overflow float32 (inf inputs to `down`)."""
    model = tiny_mlp()
    with torch.no_grad():
        model.up.weight.fill_(3e38)
    return model


def test_overflowing_calibration_statistics_are_a_user_error() -> None:
    with pytest.raises(UserError, match="calibration statistics") as info:
        surgeon.apply(_overflowing_mlp(), [Factorize(target="down", rank=Rank(value=8),
                                                     method="svd_llm")],
                      example_inputs=_x())
    assert "down" in str(info.value)


def test_json_safe_turns_non_finite_floats_into_null() -> None:
    data = {"a": math.nan, "b": [math.inf, 1.5, (-math.inf, 2)], "c": {"d": "nan"}, "e": 3}
    assert json_safe(data) == {"a": None, "b": [None, 1.5, [None, 2]],
                                      "c": {"d": "nan"}, "e": 3}


def test_report_json_dump_is_valid_json_and_python_dump_keeps_floats() -> None:
    report = CompileReport(params_before=1, params_after=1,
                           fidelity={"cosine": math.nan, "rel_error": math.inf},
                           verify=[{"metric": "cosine", "value": math.nan}],
                           artifacts=[ArtifactReport(kind="onnx", path="m.onnx", bytes=1,
                                                     sha256="0", seconds=0.1,
                                                     ort_max_abs_diff=math.nan)])
    dumped = json.dumps(report.model_dump(mode="json"), allow_nan=False)
    back = json.loads(dumped)
    assert back["fidelity"] == {"cosine": None, "rel_error": None}
    assert back["verify"][0]["value"] is None and back["artifacts"][0]["ort_max_abs_diff"] is None
    assert math.isnan(report.model_dump()["fidelity"]["cosine"])


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"invalid JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_fidelity_gives_valid_report_and_cli_json(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "overflow_models.py").write_text(
        "import torch\nfrom toy_models import tiny_mlp\n\n\ndef overflow():\n"
        "    model = tiny_mlp()\n    with torch.no_grad():\n"
        "        model.up.weight.fill_(3e38)\n    return model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "s.surg"
    spec.write_text('model python "overflow_models:overflow"\ninput "x" float32[batch, 32]\n'
                    f'calibrate random samples 8\nreport "{tmp_path / "report"}"\n')
    assert main(["compile", str(spec), "--trust-code", "--json"]) == 0
    out = _strict_json(capsys.readouterr().out)
    assert any(v is None for v in out["fidelity"].values())
    saved = _strict_json((tmp_path / "report" / "report.json").read_text())
    assert saved["fidelity"] == out["fidelity"]


@pytest.mark.parametrize("files", [["../../tokenizer.1.json"], "tokenizer.json", [3]])
def test_tokenizer_config_cannot_name_files_elsewhere(base: Path, tmp_path: Path,
                                                      files) -> None:
    d = _copy(base, tmp_path)
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["fast_tokenizer_files"] = files
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    _refused(d, "fast_tokenizer_files")


def test_adapter_load_refuses_non_finite_adapters(tmp_path: Path) -> None:
    from surgeon.ir import SaveAdapters

    model = ('model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
             "calibrate random samples 8\n")
    result = surgeon.compile(model + 'adapter lora "layers.0.up" rank 2 alpha 4\n',
                             trust_code=True)
    result.write([SaveAdapters(path=str(tmp_path / "ad"))])
    weights = tmp_path / "ad" / "adapter_model.safetensors"
    tensors = safetensors.torch.load_file(str(weights))
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    safetensors.torch.save_file(tensors, str(weights))
    with pytest.raises(UserError, match="NaN or infinite values in .*lora_B"):
        surgeon.plan(model + f'adapter load "{tmp_path / "ad"}"\n', trust_code=True)
