"""Target globs, checked against a brute-force reference matcher written here."""

from __future__ import annotations

import re

import pytest

from surgeon import targets
from surgeon.diagnostics import UserError

SUBLAYERS = ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense")


def bert_paths(layers: int) -> list[str]:
    return [f"encoder.layer.{i}.{s}" for i in range(layers) for s in SUBLAYERS] + ["pooler.dense"]


BERT6 = bert_paths(6)    # 37 paths
BERT12 = bert_paths(12)  # 73 paths: layers 10 and 11 exercise `1*`


# ---------------------------------------------------------------- reference matcher
def _close_brace(pattern: str, start: int) -> int:
    depth = 0
    for i in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced {pattern!r}")


def _split_alternatives(body: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in body:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    return [*parts, cur]


def expand(pattern: str) -> list[str]:
    """`a.{b,c}.d` -> [`a.b.d`, `a.c.d`], recursively (nested groups included)."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = _close_brace(pattern, start)
    head, tail = pattern[:start], pattern[end + 1 :]
    return [p for alt in _split_alternatives(pattern[start + 1 : end])
            for p in expand(head + alt + tail)]


def segment_matches(pat: str, seg: str) -> bool:
    """`*` is any run of characters inside one segment."""
    if not pat:
        return not seg
    if pat[0] == "*":
        return any(segment_matches(pat[1:], seg[i:]) for i in range(len(seg) + 1))
    return bool(seg) and pat[0] == seg[0] and segment_matches(pat[1:], seg[1:])


def segments_match(pats: list[str], segs: list[str]) -> bool:
    """`**` is zero or more whole segments."""
    if not pats:
        return not segs
    if pats[0] == "**":
        return any(segments_match(pats[1:], segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and segment_matches(pats[0], segs[0]) and segments_match(pats[1:], segs[1:])


def reference_match(pattern: str, paths: list[str]) -> list[str]:
    alternatives = [p.split(".") for p in expand(pattern)]
    return [p for p in paths if any(segments_match(a, p.split(".")) for a in alternatives)]


# ---------------------------------------------------------------- glob semantics
# pattern -> number of BERT6 matches, counted by hand (a check on the reference too)
PATTERNS: dict[str, int] = {
    "**.dense": 6 * 3 + 1,
    "encoder.**": 6 * 6,
    "**": 37,
    "encoder.layer.*.attention.self.{query,key}": 12,
    "encoder.layer.{0,5}.**": 12,
    "*.dense": 1,
    "{pooler,encoder.layer.1.output}.dense": 2,
    "encoder.layer.1*.output.dense": 1,
    "encoder.layer.*": 0,
    "*": 0,
    "encoder.**.dense": 18,
    "**.output.**": 12,
    "**.attention.**": 24,
    "encoder.layer.*.*.dense": 12,
    "encoder.layer.*.{attention.self.*,intermediate.dense}": 24,
    "encoder.layer.{1,{3,4}}.output.dense": 3,
    "**.self.{query,key,value}": 18,
    "enc*.layer.0.*.dense": 2,
    "encoder.layer.*.attention.*.{dense,value}": 12,
    "**.layer.5.**": 6,
    "pooler.dense": 1,
    "*oler.*e*": 1,
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_match_agrees_with_reference(pattern: str) -> None:
    expected = reference_match(pattern, BERT6)
    assert len(expected) == PATTERNS[pattern]
    assert targets.match(pattern, BERT6) == expected
    assert targets.match(pattern, BERT12) == reference_match(pattern, BERT12)


def test_specific_matches() -> None:
    assert targets.match("*.dense", BERT6) == ["pooler.dense"]
    assert targets.match("encoder.layer.1*.output.dense", BERT12) == [
        "encoder.layer.1.output.dense", "encoder.layer.10.output.dense",
        "encoder.layer.11.output.dense"]
    assert targets.match("{pooler,encoder.layer.1.output}.dense", BERT6) == [
        "encoder.layer.1.output.dense", "pooler.dense"]
    # `**` may match zero segments; `*` never crosses a dot
    assert targets.match("encoder.**", ["encoder", "encoderx", "encoder.a.b"]) == [
        "encoder", "encoder.a.b"]
    assert targets.match("**.dense", ["dense", "a.dense", "adense"]) == ["dense", "a.dense"]
    assert targets.match("a.*", ["a.b", "a.b.c", "ab"]) == ["a.b"]
    # literal characters are literal, not regex
    assert targets.match("a.b", ["a.b", "axb"]) == ["a.b"]


def test_reference_expands_nested_alternatives() -> None:
    assert expand("a.{b,{c,d}.e}.f") == ["a.b.f", "a.c.e.f", "a.d.e.f"]


# ---------------------------------------------------------------- resolve
@pytest.mark.parametrize(("pattern", "suggestion"), [
    ("encoder.layer.*.intermediate.dens", "encoder.layer.*.intermediate.dense"),
    ("encoder.layer.*.atention.self.query", "encoder.layer.*.attention.self.query"),
    ("encoder.layer.2.output.dnse", "encoder.layer.2.output.dense"),
])
def test_resolve_misspelled_target(pattern: str, suggestion: str) -> None:
    with pytest.raises(UserError) as info:
        targets.resolve(pattern, BERT6)
    err = info.value
    assert f"target {pattern!r} matches no Linear layer of the model" in err.message
    listed = [ln.strip() for ln in err.message.split("closest paths:", 1)[1].splitlines()]
    assert suggestion in listed
    # the rest are real paths (or their layer-generalised globs) close to the intended target
    real = [p for p in listed if p in BERT6]
    assert real and set(real) <= set(reference_match(re.sub(r"\.\d+\.", ".*.", suggestion), BERT6))
    assert err.hint is not None
    assert err.hint.startswith(f"did you mean {suggestion!r}")


def test_resolve_found_and_nothing_close() -> None:
    assert targets.resolve("**.self.query", BERT6) == [
        f"encoder.layer.{i}.attention.self.query" for i in range(6)]
    with pytest.raises(UserError) as info:
        targets.resolve("zzz", BERT6, what="module")
    assert "matches no module" in info.value.message
    assert "closest" not in info.value.message
    assert info.value.hint is None


# ---------------------------------------------------------------- check_glob
@pytest.mark.parametrize(("pattern", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    ("encoder. layer", "whitespace"),
    ("encoder.layer.{0,1", "unclosed"),
    ("encoder.{a,{b,c}", "unclosed"),
    ("encoder.layer}", "without"),
    ("a}.{b", "without"),
    ("encoder..dense", "empty path segment"),
    (".encoder", "empty path segment"),
    ("encoder.", "empty path segment"),
    ("a.{,b}", "empty alternative"),
    ("a.{b,}", "empty alternative"),
    ("a.{b,,c}", "empty alternative"),
    ("a.{}", "empty alternative"),
])
def test_check_glob_rejects(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        targets.check_glob(pattern)
    with pytest.raises(ValueError):
        targets.match(pattern, BERT6)


@pytest.mark.parametrize("pattern", ["a", "**", "a.{b,{c,d}}.*", "encoder.layer.1*.output.dense",
                                     "{pooler,encoder.layer.1.output}.dense"])
def test_check_glob_accepts(pattern: str) -> None:
    targets.check_glob(pattern)


def test_double_star_alternative_matches_zero_segments() -> None:
    paths = ["dense", "pooler.dense"]
    assert targets.match("{x,**}.dense", paths) == reference_match("{x,**}.dense", paths)
