"""Where a spec may write (decided by `surgeon check`, before any work), what it may
replace (only what surgeon wrote), outputs that overlap, and all-or-nothing
commits under late failures and SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from surgeon import atomic
from surgeon.cli import main
from surgeon.outputs import MARKER, ONNX_MARK

MODEL = 'model "minilm"\nfactorize "**.query" rank 8\n'


def _check(spec_dir: Path, outputs: str, *flags: str) -> int:
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / "s.surg"
    path.write_text(MODEL + outputs)
    return main(["check", str(path), *flags])


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_outputs_inside_the_spec_directory_are_fine(tmp_path: Path, capsys) -> None:
    assert _check(tmp_path, 'save "out/ckpt"\nexport onnx "out/m.onnx"\n'
                  'report "out/report"\n', "--json") == 0
    writes = __import__("json").loads(capsys.readouterr().out)["writes"]
    assert writes == [str(tmp_path / "out/ckpt"), str(tmp_path / "out/m.onnx"),
                      str(tmp_path / "out/report")]  # relative to the spec, not the cwd


@pytest.mark.parametrize("out", ['save "../elsewhere"', 'export onnx "/tmp/surgeon-x.onnx"',
                                 'report "a/../../b"'])
def test_writing_outside_needs_the_flag(tmp_path: Path, capsys, out: str) -> None:
    assert _check(tmp_path / "spec", out + "\n") == 2
    err = capsys.readouterr().err
    assert "outside the spec's directory" in err and "--allow-outside" in err
    assert _check(tmp_path / "spec", out + "\n", "--allow-outside") == 0


def test_symlinked_directories_cannot_smuggle_writes_outside(tmp_path: Path, capsys) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "link").symlink_to(tmp_path / "outside")
    assert _check(tmp_path / "spec", 'save "link/ckpt"\n') == 2
    assert "outside the spec's directory" in capsys.readouterr().err


def test_data_surgeon_did_not_write_is_never_replaced(tmp_path: Path, capsys) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    (tmp_path / "existing.txt").write_text("precious")
    (tmp_path / "fake.onnx").write_bytes(b"\x08\x07not ours")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    before = _tree(tmp_path)
    for out in ('report "mine"', f'report "{tmp_path / "mine"}"', 'save "existing.txt"',
                'export onnx "fake.onnx"', 'save "link"', 'export onnx "mine"'):
        assert _check(tmp_path, out + "\n") == 2, out
        err = capsys.readouterr().err
        assert "surgeon did not write" in err or "symlink" in err, err
    assert _tree(tmp_path) == {**before, "s.surg": (tmp_path / "s.surg").read_bytes()}


def test_what_surgeon_wrote_may_be_replaced(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / MARKER).write_text("{}")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x0a\x32\x13" + ONNX_MARK.encode() + b"...")
    (tmp_path / "m.onnx.data").write_bytes(b"weights")
    assert _check(tmp_path, 'save "ckpt"\nexport onnx "m.onnx"\n') == 0
    (tmp_path / "orphan.onnx.data").write_bytes(b"someone's")  # no model of ours beside it
    assert _check(tmp_path, 'export onnx "orphan.onnx"\n') == 2


@pytest.mark.parametrize("outs", [
    'save "out/m"\nexport onnx "out/m/model.onnx"',
    'export onnx "out/m/model.onnx"\nreport "out"',
    'save "out/a"\nreport "{root}/out/a"',
    'save "out/./b"\nsave hf "out/b/"',
    'export onnx "m.onnx"\nsave "m.onnx.data"',
])
def test_overlapping_outputs_are_refused(tmp_path: Path, capsys, outs: str) -> None:
    assert _check(tmp_path, outs.format(root=tmp_path) + "\n") == 2
    err = capsys.readouterr().err
    assert "overlap" in err or "the same path" in err, err


def test_unwritable_places_are_refused_by_check(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert _check(tmp_path, 'save "file/ckpt"\n') == 2
    assert "is a file" in capsys.readouterr().err
    assert _check(tmp_path, f'save "{"n" * 300}"\n') == 2
    assert "longer than the file system allows" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        assert _check(tmp_path, 'save "ro/ckpt"\n') == 2
        assert "not writable" in capsys.readouterr().err


def test_a_late_rename_failure_puts_back_what_was_replaced(tmp_path: Path,
                                                           monkeypatch) -> None:
    (tmp_path / "a.bin").write_bytes(b"old a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("old d")
    before = _tree(tmp_path)
    real = os.replace

    def flaky(src, dst):
        if Path(dst).name == "c.bin":
            raise OSError("disk full at the very end")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"), atomic.transaction():
        atomic.write_bytes(tmp_path / "a.bin", b"new a")
        with atomic.staged_dir(tmp_path / "d") as d:
            (d / "f").write_text("new d")
        atomic.write_bytes(tmp_path / "c.bin", b"new c")
    assert _tree(tmp_path) == before  # a.bin and d are back; no .tmp or .old debris


SIGTERM_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from surgeon import atomic
from surgeon.cli import Terminated, _sigterm_raises
root = Path(sys.argv[1])
try:
    with _sigterm_raises(), atomic.transaction():
        atomic.write_bytes(root / "a.bin", b"a")
        with atomic.staged_dir(root / "ckpt") as d:
            (d / "x").write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
except Terminated:
    sys.exit(143)
"""


def test_sigterm_mid_write_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("kept")
    proc = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)], timeout=60)
    assert proc.returncode == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("out", ['export onnx "/"', 'save "/"', 'report "."'])
def test_paths_that_name_nothing_are_refused(tmp_path: Path, capsys, out: str) -> None:
    assert _check(tmp_path, out + "\n", "--allow-outside") == 2
    err = capsys.readouterr().err
    assert "names no file or directory" in err or "surgeon did not write" in err, err


def test_a_full_disk_is_exit_2_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    spec = tmp_path / "s.surg"
    spec.write_text('model python "toy_models:tiny_mlp"\ninput "x" float32[batch, 32]\n'
                    'calibrate random samples 8\nfactorize "up" rank 4\n'
                    'export onnx "out/m.onnx"\nsave "out/ckpt"\n')
    monkeypatch.setattr(atomic.tempfile, "mkstemp", full)
    monkeypatch.setattr(atomic.tempfile, "mkdtemp", full)
    assert main(["compile", str(spec), "--trust-code", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.surg"]
