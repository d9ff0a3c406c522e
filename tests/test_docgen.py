"""docs/language.md is generated from the IR, the grammar and the catalogues; the
committed file must be what the generator writes now."""

from __future__ import annotations

from surgeon import docgen, ir


def test_committed_language_reference_is_fresh() -> None:
    assert docgen.TARGET.read_text(encoding="utf-8") == docgen.generate(), (
        "docs/language.md is stale: run python -m surgeon.docgen")


def test_every_statement_and_field_is_documented() -> None:
    text = docgen.generate()
    rules = docgen._rules(docgen._grammar())
    kinds = docgen._statement_kinds(rules)
    assert {ir.node_class(k) for k in kinds} >= set(ir.STEP_TYPES) | set(ir.OUTPUT_TYPES)
    for kind in kinds:
        cls = ir.node_class(kind)
        section = text.split(f"\n### {cls.keyword}\n", 1)[1].split("\n### ", 1)[0]
        assert f"YAML/JSON `kind: {kind}`" in section
        assert rules[kind] in section  # its grammar rule, verbatim
        for name in cls.model_fields:
            if name not in ("kind", "span"):
                assert f"| `{name}` |" in section, (kind, name)
