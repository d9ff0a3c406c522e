"""CLI: exit codes, --json objects, the --trust-code gate, graph and schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from surgeon.cli import main


def _write(tmp_path: Path, text: str, name: str = "s.surg") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_ok_and_bad_spec_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _write(tmp_path, 'model "minilm"\nfactorize "**.query" rank 8\n')
    assert main(["check", good]) == 0
    bad = _write(tmp_path, 'model "minilm"\n\nfactorise "**.query" rank 8\n', "bad.surg")
    capsys.readouterr()
    assert main(["check", bad]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:1: error: unknown keyword 'factorise'" in err
    assert "did you mean 'factorize'?" in err
    assert main(["check", bad, "--json"]) == 2
    obj = json.loads(capsys.readouterr().out)
    assert obj["exit_code"] == 2 and (obj["error"]["line"], obj["error"]["column"]) == (3, 1)


def test_missing_spec_file_is_a_user_error(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nope.surg")]) == 2
    assert "cannot read spec" in capsys.readouterr().err


def test_misspelled_target_lists_suggestions(tmp_path: Path, capsys, bert_dir: Path) -> None:
    target = "encoder.layer.*.intermediate.dens"
    spec = _write(tmp_path, f'model hf "{bert_dir}"\nfactorize "{target}" rank 8\n')
    assert main(["plan", spec]) == 2
    err = capsys.readouterr().err
    assert "matches no Linear layer" in err
    assert "did you mean 'encoder.layer.*.intermediate.dense'" in err


def test_python_model_needs_trust_code(tmp_path: Path, capsys, toy_models_on_path) -> None:
    spec = _write(tmp_path, 'model python "toy_models:tiny_mlp"\ninput "x" float32[batch, 32]\n'
                  'calibrate random samples 8\nfactorize "up" rank 4\nverify cosine >= 0.5\n'
                  f'export onnx "{tmp_path}/mlp.onnx"\n')
    assert main(["compile", spec]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert "toy_models" not in sys.modules  # refused before importing anything
    assert main(["compile", spec, "--trust-code", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["artifacts"][0]["ort_max_abs_diff"] <= 1e-5
    assert report["steps"][0]["targets"] == ["up"]


def test_verify_failure_exits_3_and_writes_nothing(tmp_path: Path, capsys,
                                                   toy_models_on_path) -> None:
    spec = _write(tmp_path, 'model python "toy_models:tiny_stack"\ninput "x" float32[batch, 16]\n'
                  'calibrate random samples 8\nfactorize "layers.*.up" rank 1\n'
                  f'verify embedding_cosine >= 0.999\nsave "{tmp_path}/ckpt"\n')
    assert main(["compile", spec, "--json", "--trust-code"]) == 3
    obj = json.loads(capsys.readouterr().out)
    assert obj["error"]["type"] == "VerifyError" and obj["error"]["measured"]["cosine"] < 0.999
    assert not (tmp_path / "ckpt").exists()


def test_graph_lists_linear_layers(tmp_path: Path, capsys, bert_dir: Path) -> None:
    spec = _write(tmp_path, f'model hf "{bert_dir}"\n')  # MiniLM's layout: 2 layers, width 32
    assert main(["graph", spec, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["linears"]
    assert len(rows) == 2 * 6  # the pooler does not feed last_hidden_state
    assert {"path": "encoder.layer.1.intermediate.dense", "out_features": 128,
            "in_features": 32, "bias": True, "params": 128 * 32 + 128} in rows
    assert main(["graph", spec]) == 0
    tree = capsys.readouterr().out
    assert "intermediate" in tree
    assert tree.count("attention") == 2 and tree.count("intermediate") == 2  # one per module


def test_schema_is_json_with_the_ir(capsys) -> None:
    assert main(["schema", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"model", "steps", "checks", "outputs"} <= set(schema["properties"])


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    bad = _write(tmp_path, 'model "minilm"\nverify cosine >= \n')
    proc = subprocess.run([sys.executable, "-m", "surgeon", "check", bad],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ":2:" in proc.stderr


def test_text_calibration_without_tokenizer_is_refused(tmp_path: Path, capsys,
                                                       toy_models_on_path) -> None:
    spec = _write(tmp_path, 'model python "toy_models:tiny_mlp"\ninput "x" float32[batch, 32]\n'
                  'calibrate text "corpus.txt"\n')
    assert main(["plan", spec, "--trust-code"]) == 2
    assert "needs a tokenizer" in capsys.readouterr().err


def test_internal_errors_exit_1_without_a_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    import surgeon.driver

    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(surgeon.driver, "plan_spec", broken)
    assert main(["plan", _write(tmp_path, 'model "minilm"\n')]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "Traceback" not in err
