"""Reloadable checkpoint: a directory that runs without the spec.

    model.pt2          the compiled program (torch.export archive, raw tensor payloads)
    model.safetensors  its weights; surgeon.load() takes the weights from here
    manifest.json      format, versions, spec text, inputs/outputs, sha256 of every file
    tokenizer files    for text models

A checkpoint directory may come from a stranger, and torch.export.load trusts its
archive: it unpickles (weights_only=False) pickled weights and constants, legacy
`data/weights/<model>.pt` members, sample inputs it cannot read as plain tensors and
`opaque_obj_*` constants; it dlopens AOTInductor libraries; it evaluates the
archive's symbolic shape expressions with sympy (Python eval); `.module()` execs the
archive's guard code; and a node target such as `torch.os.system` becomes a call.
So `load` reads the archive with zipfile first and hands it to torch only when it
is exactly what `save` writes (an allow-list, `_check_archive`):

    <root>/archive_format, archive_version, byteorder, .data/version,
        .data/serialization_id                      torch's fixed records
    <root>/models/model.json                        the program: node targets and
        operator arguments only aten/prims overloads, subgraph-running higher-order
        operators and the symbolic-int operators torch's serde knows,
        symbolic expressions only sympy constructors of numbers and symbols,
        no guard code
    <root>/data/sample_inputs/model.pt              empty (save writes no inputs)
    <root>/data/weights/model_weights_config.json   entries of raw tensors only
    <root>/data/weights/weight_<n>                  raw bytes, each named by an entry
    <root>/data/constants/model_constants_config.json, tensor_<n>   the same

Anything else (another member, a pickled or non-tensor entry, a compressed or
duplicated member) is refused as a UserError before torch reads the file, as is a
manifest that is not what `save` writes or a file that does not match its sha256.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import operator
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from surgeon import atomic, finite, ir
from surgeon.capture import quiet
from surgeon.diagnostics import UserError
from surgeon.emit.registry import EmitContext, register_emitter
from surgeon.report import ArtifactReport

FORMAT = "surgeon-checkpoint"
VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state(gm: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights)
    return {k: v.detach().clone().contiguous() for k, v in gm.state_dict().items()}


@register_emitter(ir.Save)
def save_checkpoint(ctx: EmitContext, out: ir.Save) -> ArtifactReport:
    t0 = time.perf_counter()
    captured, spec_text = ctx.captured, ctx.spec.to_text()
    tokenizer = ctx.loaded.tokenizer if ctx.loaded is not None else None
    ep = captured.reexport()
    ep.example_inputs = None  # no pickled sample inputs in the archive: load refuses them
    ep._guards_code = []  # guard code is Python that ExportedProgram.module() would exec
    buf = io.BytesIO()  # a file name would leak into the archive and break byte-reproducibility
    with quiet():
        torch.export.save(ep, buf)
    with atomic.staged_dir(ctx.path(out)) as d:
        (d / "model.pt2").write_bytes(buf.getvalue())
        safetensors.torch.save_file(_state(captured.gm), str(d / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(d)
        files = {p.name: _sha256(p) for p in sorted(d.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT, "version": VERSION,
            "torch": torch.__version__.split("+")[0],
            "inputs": [{"name": n, "dims": list(dims)}
                       for n, dims in zip(captured.data.input_names, captured.data.dim_names,
                                          strict=True)],
            "output": captured.output_name,
            "params": captured.num_params(),
            "spec": spec_text,
            "files": files,
        }
        (d / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        total = sum(p.stat().st_size for p in d.iterdir())
        digest = _sha256(d / "manifest.json")
    return ArtifactReport(kind="checkpoint", path=out.path, bytes=total, sha256=digest,
                          seconds=time.perf_counter() - t0)


_FILE_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")  # a file directly in the checkpoint
_ROOT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # torch.export.save's top-level folder
_FIXED = ("archive_format", "archive_version", "byteorder", ".data/version",
          ".data/serialization_id", "models/model.json", "data/sample_inputs/model.pt",
          "data/weights/model_weights_config.json",
          "data/constants/model_constants_config.json")
_PAYLOADS = {"data/weights/": "weight_", "data/constants/": "tensor_"}  # raw tensor bytes
_PAYLOAD_META = {"path_name", "is_param", "use_pickle", "tensor_meta"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _refuse(pt2: Path, what: str) -> UserError:
    return UserError(f"{pt2}: {what}",
                     "surgeon.load reads only checkpoints as `save` writes them; "
                     "this one was altered or made by something else")


def _members(pt2: Path, z: zipfile.ZipFile) -> tuple[str, set[str]]:
    """The archive's root folder and its member names below it, each allow-listed."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise _refuse(pt2, "the archive holds a member name twice")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not _ROOT.fullmatch(root := roots.pop()):
        raise _refuse(pt2, "the archive does not have one top-level folder")
    rel = set()
    for info in infos:
        name = info.filename[len(root) + 1:]
        payload = any(name.startswith(d) and re.fullmatch(p + r"\d+", name[len(d):])
                      for d, p in _PAYLOADS.items())
        if name not in _FIXED and not payload:
            raise _refuse(pt2, f"refusing archive member {info.filename!r} (not one a "
                          "surgeon checkpoint holds; torch may unpickle or run it)")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise _refuse(pt2, f"archive member {info.filename!r} is compressed or encrypted")
        rel.add(name)
    missing = [n for n in _FIXED if n not in rel]
    if missing:
        raise _refuse(pt2, f"the archive has no {root}/{missing[0]}")
    return root, rel


def _json_member(pt2: Path, z: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(z.read(name))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise _refuse(pt2, f"{name} is not valid JSON ({e})") from None


def _payload_config(pt2: Path, z: zipfile.ZipFile, root: str, folder: str,
                    rel: set[str]) -> None:
    """Every entry a raw tensor (use_pickle false, tensor metadata, a weight_<n> or
    tensor_<n> member), every raw member named by an entry."""
    prefix = _PAYLOADS[folder]
    kind = folder.rstrip("/").rsplit("/", 1)[-1]
    name = f"{root}/{folder}model_{kind}_config.json"
    config = _json_member(pt2, z, name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or set(config) != {"config"}:
        raise _refuse(pt2, f"{name} is not a payload config")
    pickled = [k for k, meta in entries.items()
               if not isinstance(meta, dict) or meta.get("use_pickle") is not False]
    if pickled:
        raise _refuse(pt2, f"refusing pickled tensors ({', '.join(map(str, pickled[:3]))})")
    used = set()
    for fqn, meta in entries.items():
        path_name = meta.get("path_name")
        if (set(meta) != _PAYLOAD_META or not isinstance(meta["tensor_meta"], dict)
                or not isinstance(meta["is_param"], bool) or not isinstance(path_name, str)
                or not re.fullmatch(prefix + r"\d+", path_name)):
            raise _refuse(pt2, f"{name}: entry {fqn!r} is not a raw tensor")
        if folder + path_name not in rel:
            raise _refuse(pt2, f"{name}: entry {fqn!r} names a missing member {path_name!r}")
        used.add(folder + path_name)
    unused = sorted(n for n in rel if n.startswith(folder + prefix) and n not in used)
    if unused:
        raise _refuse(pt2, f"archive member {root}/{unused[0]} is named by no entry")


# Operators a program may call. aten and prims overloads (but not aten::from_file,
# which maps a file named by the archive, writable with shared=True); higher-order
# operators that only run subgraphs of the same archive (not those that call
# compiled code, delegates, Python functions or torchbind objects).
# surgeon's own ops (surgeon/kernels/) are registered before a program is checked or loaded
_OP_NAMESPACES = frozenset({"aten", "prims", "surgeon"})
_DENIED_OPS = frozenset({"from_file"})
_SAFE_HOPS = frozenset({
    "cond", "while_loop", "while_loop_stack_output", "scan", "associative_scan", "map_impl",
    "wrap", "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized",
    "auto_functionalized_v2", "invoke_subgraph", "flex_attention", "with_effects",
    "out_dtype", "hints_wrapper", "tag_activation_checkpoint", "strict_mode"})


def _safe_target(target: Any) -> bool:
    """A node target (or operator argument) that torch's deserializer turns into an
    operator, never into an arbitrary Python callable (it resolves any `torch.<attr>`
    path: `torch.os.system`): an allowed torch.ops overload or higher-order operator,
    or one of the symbolic-int operators torch's serde knows (operator.add, math.trunc)."""
    from torch._export.serde.serialize import _SYM_OPS

    if not isinstance(target, str):
        return False
    if target.startswith("torch.ops."):
        parts = target.split(".")[2:]
        if parts[:1] == ["higher_order"]:
            kind: type = torch._ops.HigherOrderOperator
            allowed = len(parts) == 2 and parts[1] in _SAFE_HOPS
        else:
            kind = torch._ops.OpOverload
            allowed = (len(parts) == 3 and parts[0] in _OP_NAMESPACES
                       and parts[1] not in _DENIED_OPS)
        if not allowed or not all(p.isidentifier() for p in parts):
            return False
        obj: Any = torch.ops
        for part in parts:
            try:
                obj = getattr(obj, part)
            except Exception:  # noqa: BLE001 - no such operator
                return False
        return isinstance(obj, kind)
    module, _, name = target.partition(".")
    base = {"_operator": operator, "math": math, "torch": torch}.get(module)
    if base is None or not name.isidentifier():
        return False
    fn = getattr(base, name, None)
    return fn is operator.getitem or (fn is not None and fn in _SYM_OPS)


# sympy constructors that symbolic shape expressions are written with (srepr), and
# the torch.utils._sympy functions torch's deserializer puts in their namespace. The
# strings are evaluated by sympy.sympify (Python eval) at load: only calls of these
# names on numbers, quoted symbol names and keyword flags may reach it.
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod",
    "Abs", "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality",
    "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "And", "Or", "Not", "Piecewise", "ExprCondPair", "Infinity", "NegativeInfinity",
    "IntInfinity", "NegativeIntInfinity", "BooleanTrue", "BooleanFalse",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity"})
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo", "True", "False"})
_SYMBOL = re.compile(r"[a-z]{1,4}\d+")  # s0, u3, zuf0: torch's symbol names
_STRING = re.compile(r"[A-Za-z0-9_.+\-]*")
_AST_OK = (ast.Expression, ast.Load, ast.keyword, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not,
           ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
           ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
           ast.BoolOp, ast.And, ast.Or)


def _safe_expr(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > 100_000:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _SYMPY_CALLS and node.id not in _SYMPY_NAMES \
                    and not _SYMBOL.fullmatch(node.id):
                return False
        elif isinstance(node, ast.keyword):
            if node.arg is None or not node.arg.isidentifier() or node.arg.startswith("_") \
                    or not isinstance(node.value, ast.Constant):
                return False
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                if not _STRING.fullmatch(node.value):
                    return False
            elif not isinstance(node.value, (bool, int, float)):
                return False
        elif not isinstance(node, _AST_OK):
            return False
    return True


def _check_program(pt2: Path, z: zipfile.ZipFile, name: str) -> None:
    """The serialized program: no guard code, node targets that are operators,
    symbolic expressions that are sympy numbers and symbols."""
    program = _json_member(pt2, z, name)
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _refuse(pt2, f"{name} is not a serialized program")
    if program.get("guards_code"):
        raise _refuse(pt2, f"{name} holds guard code (Python that loading would run)")
    stack: list[Any] = [program]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            nodes = obj.get("nodes")
            if isinstance(nodes, list):
                for node in nodes:
                    target = node.get("target") if isinstance(node, dict) else None
                    if not _safe_target(target):
                        raise _refuse(pt2, f"{name}: refusing node target {target!r} (not an "
                                      "operator torch.export writes)")
            if "as_operator" in obj and not _safe_target(obj["as_operator"]):
                raise _refuse(pt2, f"{name}: refusing operator argument "
                              f"{obj['as_operator']!r} (not an operator torch.export writes)")
            if "expr_str" in obj and not _safe_expr(obj["expr_str"]):
                raise _refuse(pt2, f"{name}: refusing symbolic expression "
                              f"{str(obj['expr_str'])[:80]!r} (sympy would eval it)")
            stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)


def _check_archive(pt2: Path) -> None:
    """model.pt2 is exactly what `save` writes (module docstring), before torch reads it."""
    try:
        with zipfile.ZipFile(pt2) as z:
            root, rel = _members(pt2, z)
            if z.getinfo(f"{root}/data/sample_inputs/model.pt").file_size:
                raise _refuse(pt2, "refusing pickled sample inputs (a surgeon checkpoint holds "
                              "none; checkpoints saved before surgeon wrote none must be "
                              "saved again)")
            for folder in _PAYLOADS:
                _payload_config(pt2, z, root, folder, rel)
            _check_program(pt2, z, f"{root}/models/model.json")
            bad = z.testzip()
            if bad is not None:
                raise _refuse(pt2, f"archive member {bad!r} is corrupt (CRC mismatch)")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, struct.error...: not a zip
        raise _refuse(pt2, f"not a readable zip archive ({type(e).__name__}: {e})") from None


def _manifest(d: Path) -> dict[str, Any]:
    path = d / "manifest.json"
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise OSError("not a regular file")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{d} is not a surgeon checkpoint (manifest.json: {e})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{d} is not a surgeon checkpoint (manifest.json is not a JSON object)")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{d}: unsupported checkpoint format {manifest.get('format')!r} "
                        f"v{manifest.get('version')}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise UserError(f"{d}: manifest.json has no 'files' table (file name -> sha256)")
    for name, digest in files.items():
        if not _FILE_NAME.fullmatch(name) or name in (".", "..", "manifest.json"):
            raise UserError(f"{d}: manifest.json names {name!r}, not a file of the checkpoint")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise UserError(f"{d}: manifest.json has no sha256 for {name!r}")
    for needed in ("model.pt2", "model.safetensors"):
        if needed not in files:
            raise UserError(f"{d}: manifest.json does not list {needed}")
    return manifest


def load(path: str | Path) -> nn.Module:
    """Reload a `save` directory as a runnable module (outputs identical to the compile).

    The directory may come from anyone: everything is checked before torch reads it
    (module docstring); a bad checkpoint is a UserError, never code run on its behalf."""
    d = Path(path)
    manifest = _manifest(d)
    for name, digest in manifest["files"].items():
        f = d / name
        if f.is_symlink() or not f.is_file() or _sha256(f) != digest:
            raise UserError(f"{f} is missing or does not match the manifest's sha256")
    pt2 = d / "model.pt2"
    import surgeon.kernels  # noqa: F401 - registers surgeon's ops, which programs may call

    _check_archive(pt2)
    try:
        with quiet():
            module = torch.export.load(pt2).module()
    except Exception as e:  # noqa: BLE001 - an archive that passed the checks but is broken
        raise _refuse(pt2, f"cannot be loaded ({type(e).__name__}: {e})") from None
    weights = d / "model.safetensors"
    try:
        state = safetensors.torch.load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - SafetensorError: a bad file
        raise UserError(f"{weights} is not a valid safetensors file: {e}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{weights} does not fit the program in model.pt2: {e}") from None
    finite.check_weights(module, f"the checkpoint {str(d)!r}")
    return module
