"""surgeon.load on checkpoints from strangers: a corpus of tampered checkpoints, each
made from a real one (a tiny MLP saved by `save`), each refused with a UserError
(exit 2) before torch reads it, and no payload ever run: the payloads' pickles and
expressions would create a marker file; the marker must never appear."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from toy_models import tiny_mlp  # tests/ is on sys.path (conftest rootdir)

import surgeon
from surgeon.diagnostics import EXIT_USER, UserError
from surgeon.emit import checkpoint

Members = dict[str, bytes]  # archive member name -> bytes, in archive order
Mutation = Callable[[Members, Path], None]  # (members, marker path): edits in place


class Payload:
    """Unpickling this opens (creates) the marker file: code run from the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def torch_saved(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint: the tiny MLP, no steps, saved by `save`."""
    out = tmp_path_factory.mktemp("ckpt") / "mlp"
    result = surgeon.apply(tiny_mlp(), [], example_inputs=(torch.randn(4, 32),),
                           dim_names=(("batch", None),))
    result.write([surgeon.ir.Save(path=str(out))])
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(saved: Path, tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    return d


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, manifest) -> None:
    (d / "manifest.json").write_text(json.dumps(manifest))


def _reseal(d: Path) -> None:
    """Make the manifest's sha256s match again: tampering by someone who rewrites it."""
    manifest = _manifest(d)
    for name in manifest["files"]:
        if (d / name).is_file():
            manifest["files"][name] = _sha(d / name)
    _write_manifest(d, manifest)


def _members(pt2: Path) -> Members:
    with zipfile.ZipFile(pt2) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(pt2: Path, members: Members, compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(pt2, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _tamper(saved: Path, tmp_path: Path, mutate: Mutation) -> tuple[Path, Path]:
    d = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    members = _members(d / "model.pt2")
    mutate(members, marker)
    _write_zip(d / "model.pt2", members)
    _reseal(d)
    return d, marker


def _root(members: Members) -> str:
    return next(iter(members)).split("/", 1)[0]


def _edit_json(members: Members, suffix: str, edit: Callable[[dict], None]) -> None:
    name = next(n for n in members if n.endswith(suffix))
    data = json.loads(members[name])
    edit(data)
    members[name] = json.dumps(data).encode()


def _refused(d: Path, match: str | None = None) -> UserError:
    with pytest.raises(UserError, match=match) as info:
        surgeon.load(d)
    assert info.value.exit_code == EXIT_USER
    return info.value


# --- the corpus -------------------------------------------------------------------


def legacy_weights(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/data/weights/model.pt"] = torch_saved(marker)


def legacy_constants(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/data/constants/model.pt"] = torch_saved(marker)


def weight_swapped_for_pickle(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["up.weight"]["use_pickle"] = True
    _edit_json(m, "model_weights_config.json", edit)
    m[f"{_root(m)}/data/weights/weight_0"] = torch_saved(marker)


def weight_bytes_swapped_for_pickle(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/data/weights/weight_0"] = torch_saved(marker)  # config still says raw


def pickled_tensor_constant(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["c"] = {"path_name": "tensor_0", "is_param": False,
                                 "use_pickle": True, "tensor_meta": None}
    _edit_json(m, "model_constants_config.json", edit)
    m[f"{_root(m)}/data/constants/tensor_0"] = torch_saved(marker)


def opaque_constant(m: Members, marker: Path) -> None:
    """torch hands opaque_obj_* constants to pickle.loads."""
    def edit(config: dict) -> None:
        config["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False,
                                   "use_pickle": True, "tensor_meta": None}
    _edit_json(m, "model_constants_config.json", edit)
    m[f"{_root(m)}/data/constants/opaque_obj_0"] = pickled(marker)


def opaque_constant_not_flagged(m: Members, marker: Path) -> None:
    """The same with use_pickle false: torch looks at the name, not the flag."""
    def edit(config: dict) -> None:
        config["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False,
                                   "use_pickle": False, "tensor_meta": {}}
    _edit_json(m, "model_constants_config.json", edit)
    m[f"{_root(m)}/data/constants/opaque_obj_0"] = pickled(marker)


def custom_object_constant(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["obj"] = {"path_name": "custom_obj_0", "is_param": False,
                                   "use_pickle": True, "tensor_meta": None}
    _edit_json(m, "model_constants_config.json", edit)
    m[f"{_root(m)}/data/constants/custom_obj_0"] = pickled(marker)


def pickled_sample_inputs(m: Members, marker: Path) -> None:
    """torch tries weights_only=True, then falls back to a full unpickle."""
    m[f"{_root(m)}/data/sample_inputs/model.pt"] = torch_saved(marker)


def guard_code(m: Members, marker: Path) -> None:
    def edit(program: dict) -> None:
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
    _edit_json(m, "models/model.json", edit)


def _first_node(program: dict) -> dict:
    return program["graph_module"]["graph"]["nodes"][0]


def node_target_not_an_operator(m: Members, marker: Path) -> None:
    def edit(program: dict) -> None:
        _first_node(program)["target"] = "torch.os.system"
    _edit_json(m, "models/model.json", edit)


def node_target_builtin(m: Members, marker: Path) -> None:
    def edit(program: dict) -> None:
        _first_node(program)["target"] = "builtins.open"
    _edit_json(m, "models/model.json", edit)


def operator_argument(m: Members, marker: Path) -> None:
    """An argument of kind as_operator is resolved like a target (flat_apply would call it)."""
    def edit(program: dict) -> None:
        _first_node(program)["inputs"][0]["arg"] = {"as_operator": "torch.os.system"}
    _edit_json(m, "models/model.json", edit)


def leaf_function_hop(m: Members, marker: Path) -> None:
    def edit(program: dict) -> None:
        _first_node(program)["target"] = "torch.ops.higher_order.invoke_leaf_function"
    _edit_json(m, "models/model.json", edit)


def file_mapping_op(m: Members, marker: Path) -> None:
    def edit(program: dict) -> None:
        _first_node(program)["target"] = "torch.ops.aten.from_file.default"
    _edit_json(m, "models/model.json", edit)


def sympy_expression(m: Members, marker: Path) -> None:
    """sympy.sympify evaluates the string: torch hands it symbolic sizes."""
    def edit(program: dict) -> None:
        values = program["graph_module"]["graph"]["tensor_values"]
        meta = next(iter(values.values()))
        meta["sizes"][0] = {"as_expr": {"expr_str": f"open({str(marker)!r}, 'w')",
                                        "hint": None}}
    _edit_json(m, "models/model.json", edit)


def aoti_library(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/data/aotinductor/model/model.so"] = b"\x7fELF"


def extra_file(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/extra/notes.txt"] = b"hello"


def second_root(m: Members, marker: Path) -> None:
    m["other/data/weights/model.pt"] = torch_saved(marker)


def path_traversal(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/../../evil"] = b"x"


def unreferenced_payload(m: Members, marker: Path) -> None:
    m[f"{_root(m)}/data/weights/weight_99"] = b"\0" * 8


def missing_weights_config(m: Members, marker: Path) -> None:
    del m[next(n for n in m if n.endswith("model_weights_config.json"))]


def weights_config_not_json(m: Members, marker: Path) -> None:
    m[next(n for n in m if n.endswith("model_weights_config.json"))] = b"{nope"


def weights_config_a_list(m: Members, marker: Path) -> None:
    m[next(n for n in m if n.endswith("model_weights_config.json"))] = b'{"config": []}'


def entry_without_tensor_meta(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["up.weight"]["tensor_meta"] = None
    _edit_json(m, "model_weights_config.json", edit)


def entry_names_a_missing_member(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["up.weight"]["path_name"] = "weight_7"
    _edit_json(m, "model_weights_config.json", edit)


def entry_names_another_folder(m: Members, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["up.weight"]["path_name"] = "../constants/tensor_0"
    _edit_json(m, "model_weights_config.json", edit)


def program_not_json(m: Members, marker: Path) -> None:
    m[next(n for n in m if n.endswith("models/model.json"))] = b"\x00\x01"


def extra_model(m: Members, marker: Path) -> None:
    root = _root(m)
    m[f"{root}/models/other.json"] = m[f"{root}/models/model.json"]
    m[f"{root}/data/sample_inputs/other.pt"] = torch_saved(marker)


CORPUS: dict[str, tuple[Mutation, str]] = {
    "legacy weights member": (legacy_weights, "data/weights/model.pt"),
    "legacy constants member": (legacy_constants, "data/constants/model.pt"),
    "weight entry pickled": (weight_swapped_for_pickle, "pickled"),
    "weight bytes a pickle": (weight_bytes_swapped_for_pickle, "cannot be loaded"),
    "pickled tensor constant": (pickled_tensor_constant, "pickled"),
    "opaque object constant": (opaque_constant, "opaque_obj_0"),
    "opaque object, use_pickle false": (opaque_constant_not_flagged, "opaque_obj_0"),
    "custom object constant": (custom_object_constant, "custom_obj_0"),
    "pickled sample inputs": (pickled_sample_inputs, "sample inputs"),
    "guard code": (guard_code, "guard code"),
    "node target torch.os.system": (node_target_not_an_operator, "torch.os.system"),
    "node target builtins.open": (node_target_builtin, "builtins.open"),
    "operator argument torch.os.system": (operator_argument, "operator argument"),
    "higher-order op calling Python": (leaf_function_hop, "invoke_leaf_function"),
    "aten::from_file": (file_mapping_op, "from_file"),
    "sympy expression": (sympy_expression, "symbolic expression"),
    "AOTInductor library": (aoti_library, "aotinductor"),
    "extra file": (extra_file, "extra/notes.txt"),
    "second root folder": (second_root, "one top-level folder"),
    "path traversal": (path_traversal, "evil"),
    "unreferenced payload": (unreferenced_payload, "weight_99"),
    "no weights config": (missing_weights_config, "model_weights_config.json"),
    "weights config not JSON": (weights_config_not_json, "not valid JSON"),
    "weights config entries a list": (weights_config_a_list, "payload config"),
    "entry without tensor_meta": (entry_without_tensor_meta, "not a raw tensor"),
    "entry names a missing member": (entry_names_a_missing_member, "weight_7"),
    "entry names another folder": (entry_names_another_folder, "not a raw tensor"),
    "program not JSON": (program_not_json, "not valid JSON"),
    "a second program": (extra_model, "models/other.json"),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_tampered_archive_is_refused_and_nothing_runs(saved: Path, tmp_path: Path,
                                                      case: str) -> None:
    mutate, match = CORPUS[case]
    d, marker = _tamper(saved, tmp_path, mutate)
    error = _refused(d)
    assert match in str(error), str(error)
    assert "model.pt2" in str(error)
    assert not marker.exists()


LIVE = ["legacy weights member", "legacy constants member", "weight entry pickled",
        "pickled tensor constant", "opaque object constant", "pickled sample inputs",
        "sympy expression", "guard code"]


@pytest.mark.parametrize("case", LIVE)
def test_the_corpus_is_live_against_plain_torch(saved: Path, tmp_path: Path,
                                                case: str) -> None:
    """Control: plain torch.export.load(...).module() (and a call) runs these payloads, so the
    refusals above are what stands between a stranger's checkpoint and code execution
    (if a torch upgrade stops running one, this names it)."""
    mutate, _ = CORPUS[case]
    if case == "guard code":  # .module() execs guards only when sample inputs exist
        def mutate(m: Members, marker: Path) -> None:  # noqa: F811
            guard_code(m, marker)
            m[f"{_root(m)}/data/sample_inputs/model.pt"] = _sample_inputs()
    d, marker = _tamper(saved, tmp_path, mutate)
    with contextlib.suppress(Exception):  # the payload ran before whatever failed
        torch.export.load(d / "model.pt2").module()(torch.randn(4, 32))
    assert marker.exists()


def _sample_inputs() -> bytes:
    buf = io.BytesIO()
    torch.save(((torch.randn(4, 32),), {}), buf)
    return buf.getvalue()


def test_compressed_member_is_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    _write_zip(d / "model.pt2", _members(d / "model.pt2"), zipfile.ZIP_DEFLATED)
    _reseal(d)
    _refused(d, "compressed")


def test_duplicate_member_is_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    members = _members(d / "model.pt2")
    name = next(n for n in members if n.endswith("weight_0"))
    with pytest.warns(UserWarning, match="Duplicate name"), \
            zipfile.ZipFile(d / "model.pt2", "a") as z:
        z.writestr(name, torch_saved(tmp_path / "pwned"))
    _reseal(d)
    _refused(d, "twice")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("cut", [0, 10, 1000, -22, -1])
def test_truncated_archive_is_refused(saved: Path, tmp_path: Path, cut: int) -> None:
    d = _copy(saved, tmp_path)
    data = (d / "model.pt2").read_bytes()
    (d / "model.pt2").write_bytes(data[:cut])
    _reseal(d)
    _refused(d, "model.pt2")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 64,
                                     pickle.dumps({"a": 1})])
def test_non_zip_archive_is_refused(saved: Path, tmp_path: Path, content: bytes) -> None:
    d = _copy(saved, tmp_path)
    (d / "model.pt2").write_bytes(content)
    _reseal(d)
    _refused(d, "not a readable zip archive")


def test_corrupted_member_data_is_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    data = bytearray((d / "model.pt2").read_bytes())
    with zipfile.ZipFile(d / "model.pt2") as z:
        info = next(i for i in z.infolist() if i.filename.endswith("weight_0"))
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF  # inside its data
    (d / "model.pt2").write_bytes(bytes(data))
    _reseal(d)
    _refused(d, "CRC")


# --- the manifest -----------------------------------------------------------------


@pytest.mark.parametrize("manifest, match", [
    ([1, 2, 3], "not a JSON object"),
    ("checkpoint", "not a JSON object"),
    ({"format": "surgeon-checkpoint", "version": 1}, "'files'"),
    ({"format": "surgeon-checkpoint", "version": 1, "files": ["model.pt2"]}, "'files'"),
    ({"format": "surgeon-checkpoint", "version": 1, "files": None}, "'files'"),
    ({"format": "surgeon-checkpoint", "version": 2, "files": {}}, "unsupported"),
    ({"format": "other", "version": 1, "files": {}}, "unsupported"),
])
def test_malformed_manifest_is_refused(saved: Path, tmp_path: Path, manifest, match) -> None:
    d = _copy(saved, tmp_path)
    _write_manifest(d, manifest)
    _refused(d, match)


@pytest.mark.parametrize("name", ["../model.pt2", "sub/model.pt2", "/etc/passwd", "..",
                                  "a\\b", "", "manifest.json"])
def test_manifest_file_names_stay_in_the_directory(saved: Path, tmp_path: Path,
                                                   name: str) -> None:
    d = _copy(saved, tmp_path)
    manifest = _manifest(d)
    manifest["files"][name] = "0" * 64
    _write_manifest(d, manifest)
    _refused(d, "not a file of the checkpoint")


def test_manifest_digest_must_be_a_sha256(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    manifest = _manifest(d)
    manifest["files"]["model.pt2"] = {"sha256": manifest["files"]["model.pt2"]}
    _write_manifest(d, manifest)
    _refused(d, "no sha256")


@pytest.mark.parametrize("drop", ["model.pt2", "model.safetensors"])
def test_manifest_must_list_the_program_and_weights(saved: Path, tmp_path: Path,
                                                    drop: str) -> None:
    d = _copy(saved, tmp_path)
    manifest = _manifest(d)
    del manifest["files"][drop]
    _write_manifest(d, manifest)
    _refused(d, f"does not list {drop}")


@pytest.mark.parametrize("text", ["{nope", "\xff\xfe", ""])
def test_manifest_not_json_is_refused(saved: Path, tmp_path: Path, text: str) -> None:
    d = _copy(saved, tmp_path)
    (d / "manifest.json").write_bytes(text.encode("latin-1"))
    _refused(d, "not a surgeon checkpoint")


def test_missing_directory_and_manifest(tmp_path: Path) -> None:
    _refused(tmp_path / "nope", "not a surgeon checkpoint")
    _refused(tmp_path, "not a surgeon checkpoint")


def test_linked_files_are_refused(saved: Path, tmp_path: Path) -> None:
    """A link may point anywhere (another checkpoint, a device): files must be files."""
    elsewhere = tmp_path / "elsewhere.pt2"
    shutil.copy(saved / "model.pt2", elsewhere)
    d = _copy(saved, tmp_path)
    (d / "model.pt2").unlink()
    (d / "model.pt2").symlink_to(elsewhere)
    _refused(d, "sha256")


# --- the weights --------------------------------------------------------------------


def _replace_weights(d: Path, state: dict[str, torch.Tensor]) -> None:
    safetensors.torch.save_file(state, str(d / "model.safetensors"))
    _reseal(d)


def _state(saved: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(saved / "model.safetensors"))


def test_weights_that_do_not_fit_are_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    state = _state(saved)
    state["up.weight"] = torch.zeros(3, 3)
    _replace_weights(d, state)
    _refused(d, "does not fit")
    state = _state(saved)
    state["extra"] = torch.zeros(1)
    _replace_weights(d, state)
    _refused(d, "does not fit")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(saved: Path, tmp_path: Path, value: float) -> None:
    d = _copy(saved, tmp_path)
    state = _state(saved)
    state["down.weight"][0, 0] = value
    _replace_weights(d, state)
    error = _refused(d, "NaN or infinite")
    assert "down.weight" in str(error)


@pytest.mark.parametrize("keep", [0, 7, 100, -5])
def test_truncated_safetensors_is_refused(saved: Path, tmp_path: Path, keep: int) -> None:
    d = _copy(saved, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:keep])
    _reseal(d)
    _refused(d, "model.safetensors")


def test_lying_safetensors_header_is_refused(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[:8] = (n + 10**6).to_bytes(8, "little")
    (d / "model.safetensors").write_bytes(bytes(data))
    _reseal(d)
    _refused(d, "not a valid safetensors file")


# --- what save writes ---------------------------------------------------------------


def test_save_writes_only_allow_listed_members(saved: Path) -> None:
    members = _members(saved / "model.pt2")
    root = _root(members)
    sample = members[f"{root}/data/sample_inputs/model.pt"]
    assert sample == b""  # no pickled example inputs (they would also leak the data)
    assert json.loads(members[f"{root}/models/model.json"])["guards_code"] == []
    checkpoint._check_archive(saved / "model.pt2")  # passes its own check


def test_saved_checkpoint_reloads_with_equal_outputs(saved: Path) -> None:
    module = surgeon.load(saved)
    x = torch.randn(5, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), tiny_mlp()(x))


@pytest.mark.parametrize("expr, ok", [
    ("Symbol('s53', positive=True, integer=True)", True),
    ("Mul(Integer(384), Symbol('s53', positive=True, integer=True))", True),
    ("Pow(Symbol('s0', integer=True), Integer(2))", True),
    ("FloorDiv(Symbol('s0'), Integer(2)) + 1", True),
    ("Rational(1, 2)", True),
    ("__import__('os').system('true')", False),
    ("eval('1')", False),
    ("S('1 + 1')", False),
    ("Symbol('x').func", False),
    ("lambdify(x, y)", False),
    ("Symbol('a; b')", False),
    ("[s0][0]", False),
    ("open", False),
    ("Symbol(**{'name': 'x'})", False),
    (42, False),
])
def test_expression_allow_list(expr, ok: bool) -> None:
    assert checkpoint._safe_expr(expr) is ok


@pytest.mark.parametrize("target, ok", [
    ("torch.ops.aten.linear.default", True),
    ("torch.ops.aten.__and__.Tensor", True),
    ("_operator.getitem", True),
    ("_operator.mul", True),
    ("torch.sym_max", True),
    ("math.trunc", True),
    ("torch.ops.higher_order.cond", True),
    ("torch.ops.higher_order.wrap_with_set_grad_enabled", True),
    ("torch.ops.prims.convert_element_type.default", True),
    ("torch.ops.aten.linear", False),  # a packet, not an overload
    ("torch.ops.aten.from_file.default", False),
    ("torch.ops.higher_order.invoke_leaf_function", False),
    ("torch.ops.higher_order.aoti_call_delegate", False),
    ("torch.ops.higher_order.flat_apply", False),
    ("torch.ops.profiler._record_function_enter.default", False),
    ("torch.ops.aten.linear.default.__call__", False),
    ("torch.ops.aten.nonexistent_op.default", False),
    ("torch.ops.load_library", False),
    ("torch.os.system", False),
    ("torch.load", False),
    ("builtins.exec", False),
    ("_operator.attrgetter", False),
    ("math.nope", False),
    ("#ext:op", False),
    (None, False),
])
def test_node_target_allow_list(target, ok: bool) -> None:
    assert checkpoint._safe_target(target) is ok


def test_manifest_must_be_a_regular_file(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path)
    (d / "manifest.json").rename(tmp_path / "manifest.json")
    (d / "manifest.json").symlink_to(tmp_path / "manifest.json")
    _refused(d, "not a regular file")
    (d / "manifest.json").unlink()
    os.mkfifo(d / "manifest.json")  # reading it would block forever
    _refused(d, "not a regular file")
