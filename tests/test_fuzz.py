"""Grammar-aware fuzzing of spec input: bad input is a located, bounded error, never a crash.

Seeds are the shipped specs/*.surg and the rich specs of test_ir. Each case mutates
one seed a few times (tokens deleted, duplicated, swapped; numbers made extreme;
words made near keywords or random unicode; braces, quotes and backslashes
inserted; truncation; very long tokens) and must either parse or raise a SpecError
at a real file:line:col with a message of bounded size, quickly. YAML and JSON
specs get their values replaced by wrong types, NaN, huge numbers and nested
garbage. A sample of the cases also goes through `surgeon check` (exit 0 or 2).
The seed is fixed: a failure reproduces, and its case is printed.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from surgeon import ir
from surgeon.cli import main
from surgeon.diagnostics import SpecError, UserError
from surgeon.parse import keywords, load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent
SEED = 20260127
TEXT_CASES = 5000
DATA_CASES = 1000
CLI_EVERY = 10  # every n-th case also runs through `surgeon check`
CASE_SECONDS = 1.0
MAX_MESSAGE = 2000  # characters of a formatted error, all lines together
MAX_LINE = 500  # characters of one line of it


def _seeds() -> list[str]:
    from test_ir import SPECS  # the rich specs: every statement and option between them

    shipped = [p.read_text(encoding="utf-8") for p in sorted((REPO / "specs").glob("*.surg"))]
    assert shipped, "no specs/*.surg found"
    return shipped + list(SPECS.values())


SEEDS = _seeds()
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|[0-9][0-9.eE+-]*|[A-Za-z_][A-Za-z0-9_]*|\n|[ \t]+|.')
KEYWORDS = sorted(keywords())
NUMBERS = ["0", "-1", "1e999", "99999999999999999999", "2.5", "NaN", "nan", "inf", "Infinity",
           "1e-999", "0.0", "00000000000000000007", "9223372036854775807",
           "9223372036854775808", "1" * 400, "9" * 5000, "1." + "0" * 300, "1e30", "1e31",
           "1e3", "4.0",
           "٣٢", "３", "²", "0x10", "1_000", "+1", "1e", ".5", "5.", "1e+", "--1"]
UNICODE = ["é", "ß", "Ω", "模型", "🙂", "\u200b", "\u202e", "\ufeff", "\x00", "\x0b", "\x7f",
           "\u2028", "\r", "\t", "\\", '"', "{", "}", ",", "%", "#", "<", ">=", "<=", "[", "]"]
INSERTS = ["{", "}", "{a,b}", "{{", "}}", '"', '\\"', "\\", "\\u12", "\\ud800", "\\udc00\\ud800",
           "\\ud83d\\ude42", "\\u0000", "\\x", "/", "..", "../..", "/dev/null", "~", "**", "*", ",",
           "..", "#", "%", "[", "]", "\n", "\r\n", "\r", "\t", " ", '""', "{,}", "{}"]


def _near(word: str, rng: random.Random) -> str:
    """A word close to a keyword: a typo of one, a prefix, a case change, glued words."""
    kw = rng.choice(KEYWORDS)
    ops = [
        lambda: kw[:-1], lambda: kw + "s", lambda: kw.upper(), lambda: kw.capitalize(),
        lambda: kw[1:] + kw[0], lambda: kw + "_" + rng.choice(KEYWORDS),
        lambda: kw[: len(kw) // 2] + rng.choice("xyz") + kw[len(kw) // 2 + 1:],
        lambda: word + kw, lambda: kw,
    ]
    return rng.choice(ops)()


def _mutate_tokens(tokens: list[str], rng: random.Random) -> list[str]:
    if not tokens:
        return tokens
    i = rng.randrange(len(tokens))
    j = rng.randrange(len(tokens))
    tok = tokens[i]
    op = rng.randrange(12)
    if op == 0:  # delete
        del tokens[i]
    elif op == 1:  # duplicate
        tokens.insert(i, tok)
    elif op == 2:  # swap
        tokens[i], tokens[j] = tokens[j], tokens[i]
    elif op == 3:  # an extreme number, where a number was or anywhere
        nums = [k for k, t in enumerate(tokens) if t[:1].isdigit()]
        tokens[rng.choice(nums) if nums and rng.random() < 0.8 else i] = rng.choice(NUMBERS)
    elif op == 4:  # a near keyword
        words = [k for k, t in enumerate(tokens) if t[:1].isalpha()]
        k = rng.choice(words) if words else i
        tokens[k] = _near(tokens[k], rng)
    elif op == 5:  # random unicode inside or instead of a token
        ch = rng.choice(UNICODE)
        cut = rng.randrange(len(tok) + 1)
        tokens[i] = tok[:cut] + ch + tok[cut:] if rng.random() < 0.5 else ch
    elif op == 6:  # braces, quotes, backslashes, line ends
        tokens.insert(i, rng.choice(INSERTS))
    elif op == 7:  # inside a string: glob syntax and escapes
        strings = [k for k, t in enumerate(tokens) if t.startswith('"') and len(t) > 1]
        if strings:
            k = rng.choice(strings)
            body = tokens[k][1:-1]
            cut = rng.randrange(len(body) + 1)
            tokens[k] = '"' + body[:cut] + rng.choice(INSERTS + UNICODE) + body[cut:] + '"'
    elif op == 8:  # a very long token
        n = rng.choice([300, 5000, 12_000])
        tokens[i] = rng.choice(['"' + "a" * n + '"', "x" * n, "9" * n,
                                '"' + "{a,b}" * (n // 5) + '"', '"' + "{" * n + '"'])
    elif op == 9:  # a line from elsewhere
        lines = rng.choice(SEEDS).splitlines()
        tokens.insert(i, rng.choice(lines) + "\n")
    elif op == 10:  # a near keyword anywhere
        tokens.insert(i, " " + _near("", rng) + " ")
    else:  # truncate
        del tokens[i:]
    return tokens


def _text_cases(n: int) -> list[str]:
    rng = random.Random(SEED)
    cases = []
    for _ in range(n):
        tokens = TOKEN.findall(rng.choice(SEEDS))
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            tokens = _mutate_tokens(tokens, rng)
        cases.append("".join(tokens))
    return cases


def _check_message(text: str, where: str) -> None:
    assert len(text) <= MAX_MESSAGE, f"{where}: a {len(text)}-character message"
    longest = max(text.splitlines() or [""], key=len)
    assert len(longest) <= MAX_LINE, f"{where}: a {len(longest)}-character line: {longest[:80]!r}"
    assert "Traceback" not in text and "internal error" not in text, where


def _check_spec_error(err: SpecError, text: str, file: str) -> None:
    lines = text.split("\n")
    w = err.where
    assert w.file == file
    assert 1 <= w.line <= len(lines) + 1, (w.line, len(lines))
    assert w.column >= 1
    formatted = err.format()
    assert formatted.startswith(f"{file}:{w.line}:{w.column}: error: ")
    _check_message(formatted, "spec error")


def _case(text: str) -> str:
    return repr(text if len(text) < 600 else text[:300] + " ... " + text[-300:])


def test_fuzz_spec_text(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    start = time.perf_counter()
    outcomes = {"ok": 0, "error": 0}
    slowest = 0.0
    for n, text in enumerate(_text_cases(TEXT_CASES)):
        t0 = time.perf_counter()
        outcomes_of_case = "ok"
        try:
            spec = parse_spec(text, "fuzz.surg")
        except SpecError as e:
            _check_spec_error(e, text, "fuzz.surg")
            outcomes["error"] += 1
            outcomes_of_case = "error"
        except Exception as e:  # noqa: BLE001 - any other exception is the bug we look for
            pytest.fail(f"case {n}: {type(e).__name__}: {e}\n{_case(text)}")
        else:
            outcomes["ok"] += 1
            # what parses prints as canonical text that parses to the same spec
            assert parse_spec(spec.to_text()) == spec, _case(text)
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        assert took < CASE_SECONDS, f"case {n} took {took:.2f} s\n{_case(text)}"
        if n % CLI_EVERY == 0:
            path = tmp_path / f"case{n}.surg"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            code = main(["check", str(path)])
            captured = capsys.readouterr()
            assert code in (0, 2), f"case {n}: exit {code}\n{captured.err}\n{_case(text)}"
            _check_message(captured.err, f"case {n}")
            if outcomes_of_case == "error":  # what the parser refused, the CLI locates
                assert code == 2 and captured.err.startswith(f"{path}:"), captured.err[:300]
    # the mutations reach both sides
    assert outcomes["ok"] > TEXT_CASES // 20 and outcomes["error"] > TEXT_CASES // 2, outcomes
    total = time.perf_counter() - start
    print(f"\n{TEXT_CASES} text cases in {total:.1f} s (slowest {slowest:.3f} s): {outcomes}")
    assert total < 60


# ---------------------------------------------------------------- YAML and JSON
GARBAGE: list[Any] = [
    True, False, None, "8", "0.9", "", "x" * 5000, -1, 0, 2**63, 10**30, 10**400, 1e308, 2.5,
    float("nan"), float("inf"), float("-inf"), [], {}, [1, 2], {"kind": "rank"}, [[[[[]]]]],
    {"a": {"b": {"c": [1, {"d": None}]}}}, "{a,b}" * 30, "{" * 100, "**x", "٣٢", "\x00",
    {"kind": "nope"}, ["**"], 1.0, 64.0, "\ud800", "a\x00b", "../../x", "/", ".", "",
]


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_data(data: Any, rng: random.Random) -> Any:
    paths = [p for p in _paths(data) if p]
    if not paths:
        return rng.choice(GARBAGE)
    path = rng.choice(paths)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    op = rng.randrange(5)
    if op == 0 and isinstance(parent, dict):
        del parent[last]
    elif op == 1 and isinstance(parent, dict):
        parent[rng.choice(["bogus", "kind", "span", "rank", "x" * 300])] = rng.choice(GARBAGE)
    elif op == 2:  # a near value of the same type
        value = parent[last]
        if isinstance(value, bool):
            parent[last] = not value
        elif isinstance(value, int | float):
            half = value + 0.5 if abs(value) < 2**53 else value  # a big int makes no float
            parent[last] = rng.choice([value * 1000, -value, half, 0, 2**64])
        elif isinstance(value, str):
            parent[last] = value[:-1] if value else "x"
        else:
            parent[last] = rng.choice(GARBAGE)
    else:
        parent[last] = rng.choice(GARBAGE)
    return data


def _data_cases(n: int) -> list[tuple[str, str]]:
    rng = random.Random(SEED + 1)
    dumped = [parse_spec(s).model_dump(mode="json") for s in SEEDS]
    cases = []
    for _ in range(n):
        data = json.loads(json.dumps(rng.choice(dumped)))
        for _ in range(rng.choice([1, 1, 2, 3])):
            data = _mutate_data(data, rng)
        if rng.random() < 0.5:
            cases.append((".json", json.dumps(data)))
        else:
            cases.append((".yaml", yaml.safe_dump(data, allow_unicode=True)))
    return cases


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def test_fuzz_yaml_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    start = time.perf_counter()
    outcomes = {"ok": 0, "error": 0}
    for n, (suffix, text) in enumerate(_data_cases(DATA_CASES)):
        path = tmp_path / f"case{n}{suffix}"
        path.write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        try:
            spec = load_spec(path)
        except UserError as e:
            assert e.message.startswith(f"{path}: "), e.message[:300]
            _check_message(e.format(), f"case {n}")
            outcomes["error"] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"case {n}: {type(e).__name__}: {e}\n{_case(text)}")
        else:
            outcomes["ok"] += 1
            dumped = spec.model_dump(mode="json")
            assert _finite(dumped), _case(text)  # NaN and infinity never get in
            assert ir.Spec.model_validate(dumped) == spec
        assert time.perf_counter() - t0 < CASE_SECONDS, _case(text)
        if n % CLI_EVERY == 0:
            code = main(["check", str(path)])
            captured = capsys.readouterr()
            assert code in (0, 2), f"case {n}: exit {code}\n{captured.err}"
            _check_message(captured.err, f"case {n}")
    assert outcomes["ok"] and outcomes["error"] > DATA_CASES // 2, outcomes
    total = time.perf_counter() - start
    print(f"\n{DATA_CASES} YAML/JSON cases in {total:.1f} s: {outcomes}")
    assert total < 60
