"""Hostile input: globs that expand exponentially, numbers past every range, specs and
corpora of any size or encoding. Each is a clear error (exit 2 from `surgeon check`),
bounded in time, memory and message size, never a traceback."""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from test_targets import expand, segments_match  # the brute-force references

from surgeon import ir, targets
from surgeon.cli import main
from surgeon.diagnostics import QUOTE, Location, SpecError, UserError, bounded, clip
from surgeon.parse import (
    MAX_LINE_LENGTH,
    MAX_SPEC_BYTES,
    MAX_SPEC_LINES,
    MAX_SPEC_TOKENS,
    load_spec,
    parse_spec,
)

M = 'model "minilm"\n'
BERT = [f"encoder.layer.{i}.{s}" for i in range(12)
        for s in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")]


def _quick(seconds: float = 1.0):
    """A context that fails the test if its body takes longer than `seconds`."""

    class Timer:
        def __enter__(self) -> Timer:
            self.start = time.perf_counter()
            return self

        def __exit__(self, *exc: Any) -> None:
            took = time.perf_counter() - self.start
            if exc[0] is None:
                assert took < seconds, f"took {took:.2f} s"

    return Timer()


def _check(path: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return code, err


# ---------------------------------------------------------------- reference globs
# The old implementation's meaning, by expansion: kept here (for small globs) to check
# that matching without expansion means the same thing.




def _problems(pattern: str) -> set[str]:
    """The problems of the expanded patterns (the glob's braces balance, no empty alts)."""
    found = set()
    for plain in expand(pattern):
        segments = plain.split(".")
        if "" in segments:
            found.add("empty path segment")
        elif any("**" in s and s != "**" for s in segments):
            found.add("whole path segment")
    return found


def _random_glob(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.25 and depth < 3:
            alts = [_random_glob(rng, depth + 1) for _ in range(rng.randint(1, 3))]
            parts.append("{" + ",".join(alts) + "}")
        else:
            parts.append(rng.choice(["a", "b", ".", "*", "**", "a.", ".b", "*.", ".*", "ab",
                                     ",", "**.", ".**"]))
    return "".join(parts)


PATHS = ["a", "b", "ab", "a.b", "b.a", "a.a.b", "ab.b", "a.b.ab.b", "ba.ab", "a,b", "a.b,a",
         "aa.bb.a", "b.b.b.b", "a.b.a.b.a"]


def test_globs_mean_what_their_expansions_mean() -> None:
    rng = random.Random(7)
    valid = 0
    for _ in range(4000):
        glob = _random_glob(rng)
        problems = ({"empty alternative"} if re.search(r"\{,|,,|,\}|\{\}", glob)
                    else _problems(glob))
        if problems:
            with pytest.raises(ValueError) as info:
                targets.check_glob(glob)
            message = str(info.value)
            assert any(p in message for p in problems), (glob, message, problems)
            if "empty path segment" in problems:  # reported first, as before
                assert "empty path segment" in message
            continue
        valid += 1
        targets.check_glob(glob)
        expected = [p for p in PATHS
                    if any(segments_match(e.split("."), p.split(".")) for e in expand(glob))]
        assert targets.match(glob, PATHS) == expected, glob
    assert valid > 800


@pytest.mark.parametrize(("glob", "paths", "expected"), [
    # a `**` whose two stars sit on either side of a brace
    ("{a.*,*}*.x", ["x", "a.x", "a.b.c.x", "ax"], ["x", "a.x", "a.b.c.x"]),
    ("{*,a}*.x", ["x", "q.r.x", "ab.x", "a.b.x"], ["x", "q.r.x", "ab.x", "a.b.x"]),
    ("{x,**}.dense", ["dense", "pooler.dense", "x.dense", "xdense"],
     ["dense", "pooler.dense", "x.dense"]),
    ("a.{**,b}.c", ["a.c", "a.b.c", "a.q.r.c", "a.bc"], ["a.c", "a.b.c", "a.q.r.c"]),
    ("a,b.{c,d}", ["a,b.c", "a,b.d", "a", "b.c"], ["a,b.c", "a,b.d"]),  # a literal comma
    ("**.**.x", ["x", "a.x", "a.b.x"], ["x", "a.x", "a.b.x"]),
])
def test_cross_brace_globs(glob: str, paths: list[str], expected: list[str]) -> None:
    assert targets.match(glob, paths) == expected
    assert targets.match(glob, paths) == [
        p for p in paths if any(segments_match(e.split("."), p.split(".")) for e in expand(glob))]


@pytest.mark.parametrize("groups", [20, 24, 64, 800])
def test_brace_groups_are_never_expanded(groups: int) -> None:
    glob = "{a,b}" * groups
    with _quick(0.5):
        targets.check_glob(glob)
        assert targets.match(glob, ["a" * groups, "ab" * (groups // 2), "a" * (groups - 1) + "c",
                                    "a" * (groups + 1)]) == ["a" * groups, "ab" * (groups // 2)]
        assert targets.match("encoder.layer.*." + "{x,y}" * groups, BERT) == []


def test_glob_nesting_and_length_are_bounded() -> None:
    deepest = "{" * targets.MAX_DEPTH + "a,b" + "}" * targets.MAX_DEPTH
    targets.check_glob(deepest)
    assert targets.match(deepest, ["a", "b", "c"]) == ["a", "b"]
    with pytest.raises(ValueError, match="more than 32 deep"):
        targets.check_glob("{" + deepest + "}")
    with _quick(0.5), pytest.raises(ValueError, match="more than 32 deep"):
        targets.check_glob("{" * 500 + "a" + "}" * 500)  # was a RecursionError
    longest = "a." * (targets.MAX_LENGTH // 2 - 1) + "bb"
    assert len(longest) == targets.MAX_LENGTH
    targets.check_glob(longest)
    with pytest.raises(ValueError, match="4097 characters long; at most 4096"):
        targets.check_glob(longest + "b")


def test_adversarial_globs_are_linear() -> None:
    with _quick(1.0):
        for glob in ["**." * 1300 + "dense", "{*,**}." * 580 + "dense", "{a,**}." * 580 + "dense",
                     "*." * 2000 + "x", "{" + ",".join(f"a{i}" for i in range(400)) + "}.{"
                     + ",".join(f"b{i}" for i in range(400)) + "}"]:
            targets.check_glob(glob)
            targets.match(glob, BERT)
    assert len(targets.match("**." * 1300 + "dense", BERT)) == 36


def test_glob_errors_in_a_spec_are_located_and_short() -> None:
    glob = "{" * 500 + "a" + "}" * 500
    with pytest.raises(SpecError) as info:
        parse_spec(M + f'factorize "{glob}" rank 4\n', "g.surg")
    err = info.value
    assert (err.line, err.column) == (2, 11)
    assert "nests braces more than 32 deep" in err.message
    assert len(err.format()) < 1200


def test_resolve_message_quotes_a_long_glob_briefly() -> None:
    glob = "zz." + "{a,b}." * 600 + "q"
    with pytest.raises(UserError) as info:
        targets.resolve(glob, BERT)
    assert "matches no Linear layer" in info.value.message
    assert len(info.value.message) < 2 * QUOTE + 100


# ---------------------------------------------------------------- numbers in spec text
def test_integers_are_exact() -> None:
    spec = parse_spec(M + "calibrate random seed 12345678901234567\n")
    assert spec.calibrate.seed == 12345678901234567
    spec = parse_spec(M + f"calibrate random seed {2**63 - 1}\n")
    assert spec.calibrate.seed == 2**63 - 1
    with pytest.raises(SpecError, match="seed must be between 0 and 9223372036854775807"):
        parse_spec(M + f"calibrate random seed {2**63}\n")
    assert parse_spec(M + 'factorize "a" rank 0000000000000000000000000000000000008\n') \
        .steps[0].rank.value == 8
    assert parse_spec(M + 'factorize "a" rank 1e3\n').steps[0].rank.value == 1000
    assert parse_spec(M + 'factorize "a" rank 2.0\n').steps[0].rank.value == 2


@pytest.mark.parametrize("digits", ["٣٢", "３２", "²", "߃"])
def test_only_ascii_digits_are_numbers(digits: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + f'factorize "a" rank {digits}\n', "u.surg")
    assert (info.value.line, info.value.column) == (2, 20)
    assert "unexpected character" in info.value.message


@pytest.mark.parametrize(("text", "message"), [
    ('factorize "a" rank ' + "9" * 5000, "rank 9999"),  # int() refuses past 4300 digits
    ('factorize "a" rank 1e31', "rank 1e31 is out of range"),
    ('factorize "a" rank 1' + "0" * 40 + ".5", "is out of range"),
    ("calibrate random seed " + "1" * 100, "is out of range"),
    ("verify cosine >= 1e999", "threshold 1e999 is out of range"),
    ("verify cosine >= 1" + "0" * 400, "is out of range"),
    ('factorize "a" energy 1e-999', "energy is a fraction of spectral energy in (0, 1], got 0"),
])
def test_extreme_numbers_are_located_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + text + "\n", "n.surg")
    assert info.value.line == 2
    assert message in info.value.message
    assert len(info.value.format()) < 1000


@pytest.mark.parametrize(("string", "message"), [
    ("\\ud800", "invalid string: \\ud800 is half of a surrogate pair, not a character"),
    ("a\\udc00", "invalid string: \\udc00 is half of a surrogate pair"),
    ("a\\u0000b", "invalid string: it holds a NUL character"),
    ("a\x00b", "invalid string: it holds a NUL character"),
])
def test_strings_that_are_no_name_or_path(string: str, message: str, tmp_path: Path,
                                          capsys) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + f'save "{string}"\n', "s.surg")
    assert (info.value.line, info.value.column) == (2, 6)
    assert message in info.value.message
    path = tmp_path / "s.json"
    path.write_text('{"model": {"ref": "minilm"}, "outputs": [{"kind": "save", "path": "'
                    + string.replace("\x00", "\\u0000") + '"}]}', encoding="utf-8")
    code, err = _check(path, capsys)
    assert code == 2 and f"{path}: outputs.0.path: {message}" in err


def test_escaped_surrogate_pairs_are_characters() -> None:
    assert parse_spec(M + 'save "\\ud83d\\ude42"\n').outputs[0].path == "\U0001f642"


# ---------------------------------------------------------------- YAML and JSON: strict
def _data() -> dict[str, Any]:
    return {
        "model": {"kind": "model", "source": "python", "ref": "toy_models:make_mlp"},
        "inputs": [{"kind": "input", "name": "x", "dtype": "float32", "shape": ["batch", 16]}],
        "calibrate": {"kind": "calibrate", "corpus": "random", "samples": 8, "seqlen": 16,
                      "seed": 0},
        "steps": [
            {"kind": "factorize", "target": "**", "rank": {"kind": "params", "percent": 50}},
            {"kind": "prune_layers", "layers": "layers", "mode": "remove", "count": 1},
            {"kind": "adapter", "method": "lora", "target": "**", "rank": 4, "alpha": 8,
             "dropout": 0.1},
        ],
        "checks": [{"kind": "verify", "metric": "cosine", "op": ">=", "threshold": 1}],
        "outputs": [{"kind": "export_onnx", "path": "m.onnx", "opset": 18}],
    }


def _set(data: dict[str, Any], where: str, value: Any) -> None:
    *path, last = [int(p) if p.isdigit() else p for p in where.split(".")]
    for p in path:
        data = data[p]
    data[last] = value


STRICT = [
    ("calibrate.samples", True, "calibrate.samples: Input should be a valid integer"),
    ("calibrate.samples", "8", "calibrate.samples: Input should be a valid integer"),
    ("calibrate.samples", 8.0, "calibrate.samples: Input should be a valid integer"),
    ("calibrate.seed", float("nan"), "calibrate.seed: Input should be a valid integer"),
    ("checks.0.threshold", float("nan"), "checks.0.threshold: Input should be a finite number"),
    ("checks.0.threshold", float("inf"), "checks.0.threshold: Input should be a finite number"),
    ("checks.0.threshold", True, "checks.0.threshold: Input should be a valid number"),
    ("checks.0.threshold", "0.9", "checks.0.threshold: Input should be a valid number"),
    ("checks.0.threshold", 10**400, "checks.0.threshold: Input should be a valid number"),
    ("steps.0.rank.percent", True, "steps.0.factorize.rank.params.percent: Input should be a "
                                   "valid number"),
    ("steps.1.count", True, "steps.1.prune_layers.count: Input should be a valid integer"),
    ("steps.2.alpha", float("-inf"), "steps.2.adapter.alpha: Input should be a finite number"),
    ("steps.2.dropout", "0.1", "steps.2.adapter.dropout: Input should be a valid number"),
    ("steps.2.rank", 4.5, "steps.2.adapter.rank: Input should be a valid integer"),
    ("outputs.0.opset", "18", "outputs.0.export_onnx.opset: Input should be a valid integer"),
    ("inputs.0.shape.1", True, "inputs.0.shape.1.int: Input should be a valid integer"),
]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize(("where", "value", "message"), STRICT,
                         ids=[f"{w}={v!r}"[:40] for w, v, _ in STRICT])
def test_structured_specs_are_strict(tmp_path: Path, suffix: str, where: str, value: Any,
                                     message: str) -> None:
    data = _data()
    _set(data, where, value)
    path = tmp_path / f"s{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data), encoding="utf-8")  # NaN and Infinity as JSON allows
    else:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")  # .nan and .inf
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert info.value.message == f"{path}: {message}"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_structured_specs_still_take_lists_and_whole_floats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"s{suffix}"
    data = _data()
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data), "utf-8")
    spec = load_spec(path)
    assert spec.inputs[0].shape == ("batch", 16)
    assert spec.checks[0].threshold == 1.0 and isinstance(spec.checks[0].threshold, float)
    assert spec.steps[0].rank == ir.ParamsFraction(percent=50.0)


def test_python_api_is_strict_too() -> None:
    with pytest.raises(pydantic.ValidationError):
        ir.Rank(value=True)
    with pytest.raises(pydantic.ValidationError):
        ir.Calibrate(samples="8")
    with pytest.raises(pydantic.ValidationError, match="finite"):
        ir.Verify(metric="cosine", op=">=", threshold=float("nan"))
    with pytest.raises(pydantic.ValidationError, match="finite"):
        ir.Energy(fraction=float("nan"))
    assert ir.InputSig(name="x", dtype="float32", shape=["batch", 16]).shape == ("batch", 16)
    assert ir.Adapter(target="**", rank=4, alpha=8).alpha == 8.0


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bomb.yaml", "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                  "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                  "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nsteps: *e\nmodel: {ref: minilm}\n",
     "too large: more than 10000 values"),
    ("cycle.yaml", "a: &a [*a]\nmodel: {ref: minilm}\n", "nested more than 32 levels deep"),
    ("deep.json", "[" * 100_000, "not valid JSON"),
    ("deep.yaml", "[" * 100_000, "not valid YAML"),
    ("nested.json", '{"model": ' + '{"a":' * 40 + "1" + "}" * 40 + "}",
     "nested more than 32 levels deep"),
    ("wide.json", "[" + "1," * 20_000 + "1]", "too large: more than 10000 values"),
    ("wide.yaml", "steps: [" + "1," * 30_000 + "1]\n", "too large: more than 20000 YAML events"),
    ("huge.json", '{"model": {"ref": "minilm"}, "calibrate": {"seed": ' + "9" * 5000 + "}}",
     "not valid JSON"),
    ("huge.yaml", "model: {ref: minilm}\ncalibrate: {seed: " + "9" * 5000 + "}\n",
     "not valid YAML"),
    ("list.yaml", "[1, 2]\n", "(top level): Input should be a valid dictionary"),
    ("date.yaml", "model: {ref: 2020-01-01}\n", "model.ref: Input should be a valid string"),
])
def test_structured_spec_shapes_are_bounded(tmp_path: Path, name: str, text: str,
                                            message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with _quick(1.0), pytest.raises(UserError) as info:
        load_spec(path)
    assert info.value.message.startswith(f"{path}: ")
    assert message in info.value.message
    assert len(info.value.format()) < 1000


# ---------------------------------------------------------------- size, encoding, messages
def test_oversized_specs_are_refused_before_parsing(tmp_path: Path, capsys) -> None:
    for name, text in [("blank.surg", M + "\n" * 5_000_000), ("line.surg", M + "x" * 5_000_000),
                       ("big.yaml", "model: {ref: minilm}\n" + "#\n" * 3_000_000)]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with _quick(1.0):
            code, err = _check(path, capsys)
        assert code == 2
        assert f"spec {str(path)!r} is larger than {MAX_SPEC_BYTES // 1024} KiB" in err
        assert len(err) < 300


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_as_spec_is_bounded(capsys) -> None:
    with _quick(1.0):
        code, err = _check(Path("/dev/zero"), capsys)
    assert code == 2 and "is larger than" in err


def test_spec_lines_line_length_and_tokens_are_bounded() -> None:
    with _quick(1.0):
        parse_spec(M + "\n" * (MAX_SPEC_LINES - 2) + "fold\n")
    with _quick(1.0), pytest.raises(SpecError) as info:
        parse_spec(M + "\n" * 100_000)
    assert (info.value.line, info.value.message) == (
        MAX_SPEC_LINES + 1, f"spec has more than {MAX_SPEC_LINES} lines")
    with pytest.raises(SpecError) as info:
        parse_spec(M + 'save "' + "x" * 100_000 + '"\n', "l.surg")
    assert (info.value.line, info.value.column) == (2, MAX_LINE_LENGTH + 1)
    assert len(info.value.format()) < 3 * QUOTE + 100
    with _quick(1.0), pytest.raises(SpecError) as info:
        parse_spec(M + "fold\n" * (MAX_SPEC_TOKENS // 2 + 10), "t.surg")
    assert "more than 10000 words, values and symbols" in info.value.message
    assert info.value.line == MAX_SPEC_TOKENS // 2


def test_check_is_fast_on_the_largest_hostile_specs(tmp_path: Path, capsys) -> None:
    room = MAX_SPEC_BYTES - len(M)
    per = len('factorize "x000.' + "{a,**}." * 580 + 'dense" rank 4\n')
    globs = "".join(f'factorize "x{i:03}.' + "{a,**}." * 580 + 'dense" rank 4\n'
                    for i in range(room // per))
    folds = "fold\n" * (MAX_SPEC_TOKENS // 2 - 10)
    dims = 'input "x" float32[' + "1," * (MAX_SPEC_TOKENS // 2 - 20) + "1]\n"
    for name, text in [("globs", globs), ("folds", folds), ("dims", dims)]:
        path = tmp_path / f"{name}.surg"
        path.write_text(M + text, encoding="utf-8")
        assert path.stat().st_size <= MAX_SPEC_BYTES
        with _quick(1.5):  # well under a second here; slack for a loaded machine
            code, _ = _check(path, capsys)
        assert code == 0, name


def test_garbage_line_gives_a_short_message(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.surg"
    path.write_text(M + "@" + "x" * 200_000 + "\n" + "y" * 9000 + "\n", encoding="utf-8")
    code, err = _check(path, capsys)
    assert code == 2 and err.startswith(f"{path}:2:")
    assert len(err) < 3 * QUOTE + 200
    path.write_text(M + "y" * 9000 + " 4\n", encoding="utf-8")
    code, err = _check(path, capsys)
    assert code == 2 and f"{path}:2:1: error: unknown keyword 'yyy" in err
    assert len(err) < 4 * QUOTE + 300


@pytest.mark.parametrize("name", ["s.surg", "s.yaml", "s.json"])
def test_spec_that_is_not_utf8(tmp_path: Path, capsys, name: str) -> None:
    path = tmp_path / name
    first = b'model "minilm"\n' if name.endswith(".surg") else b"{}\n"
    path.write_bytes(first + b'save "caf\xe9"\n')
    code, err = _check(path, capsys)
    assert code == 2
    offset = len(first) + len(b'save "caf')
    assert err.startswith(f"{path}:2:10: error: not UTF-8 text: byte 0xe9 at byte offset {offset}")
    assert "hint: save the spec as UTF-8" in err


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.surg"
    path.write_bytes(b"\xef\xbb\xbf" + M.encode())
    assert load_spec(path).model.ref == "minilm"


def test_bounded_messages() -> None:
    assert clip("abc") == "abc"
    assert clip("x" * 500) == "x" * (QUOTE - 1) + "…"
    long = "unknown thing '" + "z" * 100_000 + "' (known: a, b)"
    short = bounded(long)
    assert len(short) < QUOTE + 50 and short.endswith("(known: a, b)")
    many = bounded("\n".join(f"line {i}" for i in range(1000)))
    assert many.count("\n") < 50 and many.endswith("more lines)")
    err = UserError("bad " + "q" * 10_000, "did you mean " + "w" * 10_000)
    assert len(err.format()) < 3 * QUOTE


def test_long_source_line_keeps_the_caret_on_the_token() -> None:
    line = "a" * 5000 + " BAD " + "b" * 5000
    err = SpecError("oops", Location("f.surg", 3, 5002, line, 3))
    out = err.format().splitlines()
    source, caret = out[1].split(" | ", 1)[1], out[2].split("| ", 1)[1]
    assert len(source) <= QUOTE and source.startswith("…") and source.endswith("…")
    col = caret.index("^")
    assert source[col : col + 3] == "BAD" and caret.count("^") == 3
    # control characters shown one column wide, tabs as a space: the caret still aligns
    err = SpecError("oops", Location("f.surg", 1, 4, "\t\x00\x1bBAD", 3))
    source, caret = [ln.split("| ", 1)[1] for ln in err.format().splitlines()[1:3]]
    assert "\x00" not in source and "\x1b" not in source and "\t" not in source
    assert source[caret.index("^") :].startswith("BAD")


# ---------------------------------------------------------------- calibration text
@pytest.fixture
def corpus():
    from surgeon import corpus

    return corpus


def _cal(path: Path | str) -> ir.Calibrate:
    return ir.Calibrate(path=str(path), samples=2, seqlen=8)


def test_calibration_text_reads_as_before(tmp_path: Path, corpus) -> None:
    path = tmp_path / "c.txt"
    path.write_text("".join(f"line {i}\r\n\n" for i in range(20)), encoding="utf-8")
    train, held = corpus.split_texts(_cal(path))
    assert len(train) == 2 and len(held) == 4
    assert not set(train) & set(held) and all(s.startswith("line ") for s in train + held)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_calibration_from_a_device_is_refused(corpus) -> None:
    with _quick(1.0), pytest.raises(UserError, match="'/dev/zero' is not a regular file"):
        corpus.split_texts(_cal("/dev/zero"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_calibration_from_a_fifo_is_refused_without_blocking(tmp_path: Path, corpus) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with _quick(1.0), pytest.raises(UserError, match="is not a regular file"):
        corpus.split_texts(_cal(fifo))


def test_calibration_from_a_directory_or_nowhere(tmp_path: Path, corpus) -> None:
    with pytest.raises(UserError, match="is not a regular file"):
        corpus.split_texts(_cal(tmp_path))
    with pytest.raises(UserError, match="cannot read calibration text"):
        corpus.split_texts(_cal(tmp_path / "missing.txt"))


def test_calibration_text_that_is_not_utf8(tmp_path: Path, corpus) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"one\ntwo\nthr\xffee\n")
    with pytest.raises(UserError) as info:
        corpus.split_texts(_cal(path))
    assert info.value.message == (f"calibration text {str(path)!r} is not UTF-8 text: "
                                  "byte 0xff at byte offset 11 (line 3)")


def test_calibration_text_size_and_lines_are_bounded(tmp_path: Path, corpus,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.txt"
    path.write_text("a sample\n" * 1000, encoding="utf-8")
    monkeypatch.setattr(corpus, "MAX_TEXT_BYTES", 4000)
    with pytest.raises(UserError, match="is larger than"):
        corpus.split_texts(_cal(path))
    monkeypatch.setattr(corpus, "MAX_TEXT_BYTES", 1 << 20)
    monkeypatch.setattr(corpus, "MAX_TEXT_LINES", 500)
    with pytest.raises(UserError, match="has 1000 lines, more than 500"):
        corpus.split_texts(_cal(path))
    # every line end that splitlines() knows counts, not just \n
    path.write_text("a\u2028" * 1000, encoding="utf-8")
    with pytest.raises(UserError, match="more than 500"):
        corpus.split_texts(_cal(path))


def test_cli_never_prints_a_traceback_for_these(tmp_path: Path, capsys) -> None:
    """A few of the above through the CLI, --json included."""
    cases = {
        "a.surg": M + 'factorize "' + "{a,b}" * 24 + '" rank 4\n',
        "b.surg": M + 'factorize "a" rank ' + "9" * 5000 + "\n",
        "c.json": json.dumps({"model": {"ref": "minilm"}, "calibrate": {"samples": True}}),
        "d.yaml": "model: {ref: minilm}\ncalibrate: {samples: .nan}\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        code = main(["check", str(path), "--json"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "internal error" not in err
        if name == "a.surg":
            assert code == 0
            continue
        assert code == 2
        obj = json.loads(out)
        assert obj["exit_code"] == 2 and len(obj["error"]["message"]) < 500
    assert sys.getrecursionlimit() >= 1000  # nothing here lowered it
