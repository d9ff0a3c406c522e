"""Method catalogues: every entry resolves to its function and cites its paper;
names are checked with a did-you-mean; duplicates are refused; `surgeon methods`
prints them."""

from __future__ import annotations

import json

import pytest

from surgeon.catalogue import Catalogue, Method
from surgeon.cli import main
from surgeon.methods import FAMILIES
from surgeon.observers import OBSERVERS

CITATION_OPTIONAL = {"verify"}  # plain measurements, not methods from a paper


@pytest.mark.parametrize("family", list(FAMILIES))
def test_entries_resolve_cite_and_need_known_statistics(family: str) -> None:
    catalogue = FAMILIES[family]
    assert catalogue.names()
    for m in catalogue:
        assert callable(m.function), m.impl
        assert m.summary and "\n" not in m.summary
        if family not in CITATION_OPTIONAL:
            assert m.paper is not None and m.paper.title, m.name
        for need in m.needs:
            OBSERVERS[need]  # raises for an unknown statistic


def test_papers_with_arxiv_ids_are_well_formed() -> None:
    import re

    for catalogue in FAMILIES.values():
        for m in catalogue:
            if m.paper and m.paper.arxiv:
                assert re.fullmatch(r"\d{4}\.\d{4,5}", m.paper.arxiv), m


def test_check_suggests_and_duplicates_are_refused() -> None:
    c = Catalogue("demo", "demo method")
    c.add(Method("alpha", "a", None, "math:sqrt"))
    assert c.check("alpha") == "alpha"
    with pytest.raises(ValueError, match="unknown demo method 'alpa'.*did you mean 'alpha'"):
        c.check("alpa")
    with pytest.raises(ValueError, match="already registered"):
        c.add(Method("alpha", "b", None, "math:cos"))


def test_methods_command_lists_every_catalogue(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(FAMILIES)
    svd_llm = next(m for m in out["factorize"] if m["name"] == "svd_llm")
    assert svd_llm["paper"]["arxiv"] == "2403.07378" and svd_llm["needs"] == ["gram"]
    assert main(["methods"]) == 0
    assert "SVD-LLM" in capsys.readouterr().out
