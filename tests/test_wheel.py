"""The built wheel installs surgeon with passes/kernels/grammar under the
surgeon package and nothing named passes or kernels at the top level."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).parent.parent


def test_wheel_layout_and_import(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(REPO)], check=True, timeout=300)
    (wheel,) = dist.glob("surgeon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"surgeon", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in ("surgeon/passes/factorize.py", "surgeon/kernels/__init__.py",
                   "surgeon/grammar/surgery.lark", "surgeon/data/corpus.txt"):
        assert needed in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    assert not (target / "passes").exists() and not (target / "kernels").exists()
    # -S: skip site-packages .pth files, so the editable install cannot shadow the wheel
    site = sysconfig.get_paths()["purelib"]
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import surgeon, "
            "surgeon.passes.factorize, surgeon.kernels; assert surgeon.__file__.startswith("
            "sys.argv[1]), surgeon.__file__; "
            "s = surgeon.parse_spec('model \"minilm\"\\nfactorize \"**.query\" rank 8\\n'); "
            "print(s.steps[0].rank.value)")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(target), site],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8"
