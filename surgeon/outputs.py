"""Where a spec may write, decided from the spec alone before any work (`surgeon
check` decides it too).

A spec's relative paths are relative to the spec file's directory (to the
working directory for spec text given to the Python API). A spec writes only
inside that directory unless the caller allows more (`--allow-outside`), since
a file that a stranger's spec creates, say ~/.bashrc, is as dangerous as one
it replaces. It replaces only what surgeon wrote before: a directory holding
surgeon's marker file, or an ONNX file carrying surgeon's mark; never a
symlink, a regular file of someone else's, or a directory of unrelated files.
Two outputs may not overlap (the same path, one inside the other, an ONNX
file's `.data` sidecar), however the paths are spelled. Torch-free on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from surgeon import ir
from surgeon.diagnostics import UserError

MARKER = ".surgeon-output"  # a JSON file in every directory surgeon writes
ONNX_MARK = "surgeon:export_onnx"  # the doc_string of every ONNX model surgeon writes
_HEAD = 4096  # the ONNX mark sits in the first bytes (ModelProto field 6, before the graph)
FILE_OUTPUTS = (ir.ExportOnnx,)


@dataclass(frozen=True)
class Destination:
    """Where one output lands: its absolute path and every path it occupies."""

    output: ir.Output
    path: Path
    occupies: tuple[Path, ...]


def base_dir(spec: ir.Spec) -> Path:
    return Path(spec.source_file).resolve().parent if spec.source_file else Path.cwd()


def marker_text() -> str:
    return json.dumps({"written_by": "surgeon"}) + "\n"


def anchored(spec: ir.Spec) -> ir.Spec:
    """The spec with the relative paths it reads (model hf, calibrate text, adapter load)
    made absolute against its directory, for loading; reports keep the spec as written,
    so its text never depends on where it was compiled."""
    base = base_dir(spec)

    def at(path: str) -> str:
        return str(base / path)

    update: dict = {}
    if spec.model.source == "hf":
        update["model"] = spec.model.model_copy(update={"ref": at(spec.model.ref)})
    if spec.calibrate.path is not None:
        update["calibrate"] = spec.calibrate.model_copy(update={"path": at(spec.calibrate.path)})
    update["steps"] = tuple(s.model_copy(update={"path": at(s.path)})
                            if isinstance(s, ir.AdapterLoad) else s for s in spec.steps)
    return spec.model_copy(update=update)


def destinations(spec: ir.Spec, *, allow_outside: bool = False,
                 outputs: tuple[ir.Output, ...] | None = None) -> list[Destination]:
    """Every output's destination (the spec's, or `outputs` written for it), or a
    UserError saying why the spec may not write it."""
    base = base_dir(spec)
    found = [_destination(o, base) for o in (spec.outputs if outputs is None else outputs)]
    for d in found:
        where = _statement(d.output)
        if not allow_outside and not _inside(d.path, base):
            raise UserError(f"{where} writes {str(d.path)!r}, outside the spec's directory "
                            f"{str(base)!r}",
                            "pass --allow-outside (allow_outside=True) if you trust this spec")
        for p in d.occupies:
            _may_replace(p, d, where)
        _parent_ok(d.path, where)
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            if any(_inside(x, y) or _inside(y, x) for x in a.occupies for y in b.occupies):
                raise UserError(f"{_statement(b.output)} and {_statement(a.output)} overlap: "
                                f"{str(b.path)!r} and {str(a.path)!r}",
                                "give each output its own path, neither inside the other")
    return found


def _destination(out: ir.Output, base: Path) -> Destination:
    if "\0" in out.path:
        raise UserError(f"{_statement(out)}: a path cannot contain a NUL character")
    path = Path(os.path.normpath(base / out.path))
    if not path.name or path.name in (".", ".."):
        raise UserError(f"{_statement(out)}: {str(path)!r} names no file or directory")
    # symlinks in the directories above resolve to where the bytes really go
    path = Path(os.path.realpath(path.parent)) / path.name
    occupies = (path, path.with_name(path.name + ".data")) if isinstance(out, FILE_OUTPUTS) \
        else (path,)
    return Destination(out, path, occupies)


def _statement(out: ir.Output) -> str:
    line = f" (line {out.span.line})" if out.span else ""
    return f"{out.keyword} {out.path!r}{line}"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _may_replace(path: Path, d: Destination, where: str) -> None:
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise UserError(f"{where}: {str(path)!r} is a symlink; surgeon does not replace links")
    if path == d.path and isinstance(d.output, FILE_OUTPUTS):
        ours = path.is_file() and _onnx_marked(path)
    elif path == d.path:
        ours = path.is_dir() and _dir_marked(path)
    else:  # an ONNX sidecar: ours when its model is
        ours = path.is_file() and d.path.is_file() and _onnx_marked(d.path)
    if not ours:
        what = "a directory" if path.is_dir() else "a file"
        raise UserError(f"{where}: {str(path)!r} exists and is {what} surgeon did not write",
                        "remove it yourself, or write the output somewhere else")


def _dir_marked(path: Path) -> bool:
    marker = path / MARKER
    if marker.is_file() and not marker.is_symlink():
        return True
    try:  # checkpoints written before the marker existed carry a surgeon manifest
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == "surgeon-checkpoint"


def _onnx_marked(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return ONNX_MARK.encode() in f.read(_HEAD)
    except OSError:
        return False


def _parent_ok(path: Path, where: str) -> None:
    """The nearest existing directory above must be a writable directory, and every name
    must fit the file system."""
    limit = 255
    ancestor = path.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{where}: {str(ancestor)!r} is a file, so nothing can be written "
                        "under it")
    with contextlib.suppress(OSError, ValueError):
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    long = [p for p in path.parts if len(os.fsencode(p)) > limit]
    if long:
        raise UserError(f"{where}: the name {long[0][:60]!r}... is longer than the file "
                        f"system allows ({limit} bytes)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{where}: {str(ancestor)!r} is not writable")

