"""Spec text -> IR: error locations, messages, hints, formatting, comments.

Every expected (line, column) below was worked out by hand from the spec text:
the caret goes on the offending token, or just past the last token of a
statement that ends too early. Columns are 1-based.
"""

from __future__ import annotations

import pytest

from surgeon import ir
from surgeon.diagnostics import SpecError
from surgeon.parse import parse_spec

M = 'model "minilm"\n'  # a valid first line, so most errors sit on line 2 or later

# (id, spec text, line, column, message substring, hint substring or None)
INVALID: list[tuple[str, str, int, int, str, str | None]] = [
    # -- syntax: misspellings get a "did you mean"
    ("stmt-keyword", M + "calibrate random\nfactorise \"a.b\" rank 4\n", 3, 1,
     "unknown keyword 'factorise'", "did you mean 'factorize'?"),
    ("first-keyword", 'modle "minilm"\n', 1, 1, "unknown keyword 'modle'", "'model'"),
    ("option-keyword", M + 'factorize "a.b" rnak 4\n', 2, 17,
     "unknown keyword 'rnak'; expected 'budget', 'energy', 'params' or 'rank'",
     "did you mean 'rank'?"),
    ("calib-option", M + "calibrate text builtin sampels 8\n", 2, 24,
     "unknown keyword 'sampels'", "did you mean 'samples'?"),
    ("export-format", M + 'export onxx "m.onnx"\n', 2, 8, "expected 'onnx'",
     "did you mean 'onnx'?"),
    # -- syntax: statement ends too early -> caret just past its last token
    ("ends-early", M + 'factorize "a.b"\nsave "x"\n', 2, 16,
     "statement ends too early; expected 'budget', 'energy', 'params' or 'rank'", None),
    ("ends-early-eof", M + "verify cosine >=", 2, 17,
     "statement ends too early; expected a number", None),
    ("ends-early-crlf", 'model "minilm"\r\n\r\nfactorize "a.b"\r\n', 3, 16,
     "statement ends too early", None),
    # -- syntax: other tokens and characters
    ("extra-token", M + "verify cosine >= 0.9 extra\n", 2, 22,
     "'extra'; expected '%' or end of line", None),
    ("extra-token-after-percent", M + "verify cosine >= 90% extra\n", 2, 22,
     "unexpected 'extra'; expected end of line", None),
    ("model-dtype", 'model "minilm" dtype bfloat61\n', 1, 22,
     "unknown model dtype 'bfloat61'", "did you mean 'bfloat16'"),
    ("keyword-for-string", M + "factorize rank 4\n", 2, 11,
     "unexpected 'rank'; expected a quoted string", None),
    ("unterminated-string", M + 'save "out/x\n', 2, 6, "unterminated string", None),
    ("stray-character", M + 'save "x" @\n', 2, 10, "unexpected character '@'", None),
    ("negative-number", M + "verify rel_error <= -1\n", 2, 21, "unexpected character '-'", None),
    # -- line numbers count comments and blank lines
    ("line-4", 'model "minilm"   # trailing comment\n# full-line comment\n\n'
     'factorise "a.b" rank 4\n', 4, 1, "unknown keyword 'factorise'", "'factorize'"),
    ("indented", M + '\n   # c\n   modle "x"\n', 4, 4, "unknown keyword 'modle'", "'model'"),
    # -- values checked by the IR, located at the value's token
    ("embedded-model", '# a comment\nmodel "minlm"\n', 2, 7,
     "unknown embedded model 'minlm'", "did you mean 'minilm'?"),
    ("empty-model-ref", 'model hf ""\n', 1, 10, "model reference is empty", None),
    ("python-ref", 'model python "pkg.mod"\n', 1, 14, "must be 'package.module:factory'", None),
    ("verify-metric", M + 'factorize "a.b" rank 4\nverify cosin >= 0.9\n', 3, 8,
     "unknown verify metric 'cosin'", "did you mean 'cosine'"),
    ("verify-direction", M + "verify cosine <= 0.9\n", 2, 15,
     "verify cosine takes '>=' (a lower bound), not '<='", None),
    ("verify-direction-upper", M + "verify rel_error >= 0.1\n", 2, 18,
     "verify rel_error takes '<=' (an upper bound)", None),
    ("rank-0", M + 'factorize "a.b" rank 0\n', 2, 22, "rank must be >= 1, got 0", None),
    ("rank-fraction", M + 'factorize "a.b" rank 2.5\n', 2, 22,
     "rank must be a whole number, got 2.5", None),
    ("params-0", M + 'factorize "a.b" params 0%\n', 2, 24,
     "params must be between 0% and 100% (exclusive), got 0%", None),
    ("params-150", M + 'factorize "a.b" params 150%\n', 2, 24, "got 150%", None),
    ("energy-1.5", M + 'factorize "a.b" energy 1.5\n', 2, 24, "in (0, 1], got 1.5", None),
    ("method", M + 'factorize "a.b" rank 4 method svdd\n', 2, 31,
     "unknown factorize method 'svdd'", "did you mean 'svd' or"),
    ("glob-unclosed", M + 'factorize "a.{b,c" rank 4\n', 2, 11, "unclosed '{'", None),
    ("glob-empty-alt", M + 'factorize "a.{b,}" rank 4\n', 2, 11, "empty alternative", None),
    ("glob-dotdot", M + 'factorize "a..b" rank 4\n', 2, 11, "empty path segment", None),
    ("glob-whitespace", M + 'factorize "a. b" rank 4\n', 2, 11, "contains whitespace", None),
    ("opset-low", M + 'export onnx "m.onnx" opset 17\n', 2, 28, "opset 17 is not supported", None),
    ("opset-high", M + 'export onnx "m.onnx" opset 24\n', 2, 28, "opset 24 is not supported", None),
    ("dtype", M + 'input "ids" float23[batch, 16]\n', 2, 13,
     "unknown dtype 'float23'", "did you mean 'float32'"),
    ("adapter-method", M + 'adapter lorra "a.b" rank 4 alpha 8\n', 2, 9,
     "unknown adapter method 'lorra'", "did you mean 'lora'"),
    ("rho-below-1", M + 'adapter lora "a.b" rank 4 alpha 8 init eva rho 0.5\n', 2, 48,
     "rho must be a number >= 1, got 0.5", None),
    ("rho-without-eva", M + 'adapter dora "a.b" rank 4 alpha 8 rho 2\n', 2, 1,
     "rho redistributes EVA's ranks; it needs 'init eva'", None),
    # the caret is on the value of the repeated option
    ("duplicate-option", M + "calibrate random samples 8 samples 9\n", 2, 36,
     "'samples' given twice", None),
    # -- whole-spec structure, located at the offending statement
    ("no-model", "# only comments\n\nsave \"x\"\n", 1, 1, "no 'model' statement", None),
    ("model-not-first", 'calibrate random\nmodel "minilm"\n', 2, 1,
     "'model' must be the first statement", None),
    ("two-models", M + 'save "x"\nmodel hf "org/m"\n', 3, 1,
     "only one 'model' statement is allowed", None),
    ("two-calibrates", M + "calibrate random\ncalibrate text builtin\n", 3, 1,
     "only one 'calibrate' statement is allowed", None),
    ("pass-after-export", M + 'export onnx "m.onnx"\nfactorize "a.b" rank 4\n', 3, 1,
     "'factorize' comes after 'export'", None),
    ("pass-after-save", M + 'save "ckpt"\n\nfactorize "a.b" rank 4\n', 4, 1,
     "'factorize' comes after 'save'", None),
    ("pass-after-verify", M + 'verify cosine >= 0.9\nfactorize "a.b" rank 4\n', 3, 1,
     "'factorize' comes after 'verify'", None),
    ("duplicate-output", M + 'save "out/a"\nexport onnx "out/a"\n', 3, 1,
     "two outputs write the same path 'out/a'", None),
]


@pytest.mark.parametrize(("text", "line", "column", "message", "hint"),
                         [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_spec_location_message_hint(text: str, line: int, column: int, message: str,
                                            hint: str | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.surg")
    err = info.value
    assert (err.line, err.column) == (line, column), err.format()
    assert message in err.message
    if hint is not None:
        assert err.hint is not None and hint in err.hint
    assert err.where.file == "bad.surg"


def test_at_least_twenty_distinct_invalid_specs() -> None:
    assert len({c[1] for c in INVALID}) == len(INVALID) >= 20


def _caret_column(formatted: str) -> tuple[str, str, int, int]:
    """(source line, caret line, 1-based caret column, caret count) from a formatted error."""
    lines = formatted.splitlines()
    src = next(i for i, ln in enumerate(lines) if ln.lstrip()[:1].isdigit() and " | " in ln)
    caret = lines[src + 1]
    body = caret.split("| ", 1)[1]
    return lines[src].split(" | ", 1)[1], caret, body.index("^") + 1, body.count("^")


def test_formatted_error_has_location_source_line_and_caret() -> None:
    text = M + "# comment\nfactorize \"encoder.**\" rnak 4\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, "specs/demo.surg")
    out = str(info.value)
    assert out.splitlines()[0].startswith("specs/demo.surg:3:24: error: unknown keyword 'rnak'")
    source, caret, col, width = _caret_column(out)
    assert source == 'factorize "encoder.**" rnak 4'
    assert (col, width) == (24, 4)
    assert source[col - 1 : col - 1 + width] == "rnak"
    assert caret.strip().startswith("|")
    assert "hint: did you mean 'rank'?" in out


def test_formatted_caret_for_end_of_statement() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + "\nexport onnx\n", "f.surg")
    out = str(info.value)
    assert "f.surg:3:12:" in out
    source, _, col, width = _caret_column(out)
    assert source == "export onnx" and (col, width) == (len(source) + 1, 1)


BASE = (
    'model "minilm"\n'
    'calibrate text builtin samples 8 seqlen 16 seed 1\n'
    'factorize "encoder.layer.*.attention.self.{query,key}" params 50%\n'
    "verify cosine >= 0.9\n"
    'save "out/#1"\n'
)


def test_comments_are_ignored() -> None:
    commented = (
        "# leading comment\n"
        'model "minilm"   # trailing comment with "quotes" and rank 4\n'
        "#factorize \"x\" rank 1  <- commented out, not a statement\n"
        'calibrate text builtin samples 8 seqlen 16 seed 1 #no space before\n'
        '    # indented comment\n'
        'factorize "encoder.layer.*.attention.self.{query,key}" params 50% # c\n'
        "verify cosine >= 0.9\n"
        'save "out/#1"  # a "#" inside a string is not a comment\n'
        "# final comment without newline"
    )
    spec = parse_spec(commented)
    assert spec == parse_spec(BASE)
    assert spec.outputs[0].path == "out/#1"
    assert len(spec.steps) == 1


def test_blank_lines_and_crlf() -> None:
    spaced = "\n\n" + BASE.replace("\n", "\n\n  \t\n") + "\n\n"
    crlf = BASE.replace("\n", "\r\n")
    crlf_commented = "# c\r\n\r\n" + BASE.replace("\n", "   # c\r\n")
    expected = parse_spec(BASE)
    for text in (spaced, crlf, crlf_commented):
        assert parse_spec(text) == expected


def test_crlf_errors_report_clean_source_line() -> None:
    text = ('model "minilm"\r\n# c\r\n\r\nfactorize "a.b" rnak 4\r\n')
    with pytest.raises(SpecError) as info:
        parse_spec(text, "w.surg")
    err = info.value
    assert (err.line, err.column) == (4, 17)
    assert err.where.source_line == 'factorize "a.b" rnak 4'
    assert "\r" not in str(err)


def test_valid_spec_builds_expected_ir() -> None:
    spec = parse_spec(BASE)
    assert spec.model == ir.ModelSource(source="embedded", ref="minilm")
    assert spec.calibrate == ir.Calibrate(corpus="builtin", samples=8, seqlen=16, seed=1)
    assert spec.steps == (ir.Factorize(target="encoder.layer.*.attention.self.{query,key}",
                                       rank=ir.ParamsFraction(percent=50)),)
    assert spec.checks == (ir.Verify(metric="cosine", op=">=", threshold=0.9),)


def test_bad_string_escape_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + 'save "out\\model"\n')
    assert (info.value.line, info.value.column) == (2, 6)
    assert "invalid escape" in info.value.message


def test_literal_tab_in_a_string_is_kept() -> None:
    assert parse_spec(M + 'save "a\tb"\n').outputs[0].path == "a\tb"


def test_ends_early_caret_ignores_trailing_comment() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + 'factorize "a.b"   # half done\n')
    assert (info.value.line, info.value.column) == (2, 16)


def test_duplicate_output_points_at_the_duplicate() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(M + 'save "a"\nexport onnx "a"\nsave "b"\n')
    assert info.value.line == 3


def test_grammar_is_strict_lalr() -> None:
    """No shift/reduce conflict and no terminal collision (lark's strict mode raises)."""
    from surgeon.parse import parser

    strict = parser(strict=True)
    assert strict.options.strict and strict.options.parser == "lalr"
    assert parser().parse("model \"minilm\"\nfold\n") == strict.parse("model \"minilm\"\nfold\n")
