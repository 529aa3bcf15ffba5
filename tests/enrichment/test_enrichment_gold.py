"""The hand-annotated gold set: precision and recall computed here, held to the targets.

Targets: places precision >= 0.95 and recall >= 0.90; agency and dateline precision and recall
>= 0.95. The figures are computed on every run from the corpus text and the annotations in
tests/data/enrichment_gold.jsonl (see tests/data/README.md); nothing is hard-coded.
"""

from __future__ import annotations

import pytest

from bench.enrichment import CORPUS, evaluate, load_articles, load_gold


@pytest.fixture(scope="module")
def scores():
    if not CORPUS.exists():
        pytest.fail(f"the development corpus is missing: expected {CORPUS} (see ../shared/corpus/SOURCES.md)")
    gold = load_gold()
    articles = load_articles(r["id"] for r in gold)
    assert len(articles) == len(gold), "every gold id must be in the corpus"
    return evaluate(gold, articles)


def test_gold_set_covers_outlets_and_strata() -> None:
    gold = load_gold()
    assert len(gold) >= 60
    assert {r["stratum"] for r in gold} == {"random", "wire"}
    assert {r["source_dataset"] for r in gold} >= {"SaudiNewsNet", "SANAD-AlKhaleej"}
    assert len({r["id"] for r in gold}) == len(gold)


def test_places_targets(scores) -> None:
    s = scores["places"]
    assert s.precision >= 0.95, s.errors
    assert s.recall >= 0.90, s.errors


def test_agency_targets(scores) -> None:
    s = scores["agencies"]
    assert s.precision >= 0.95, s.errors
    assert s.recall >= 0.95, s.errors


def test_dateline_targets(scores) -> None:
    s = scores["dateline"]
    assert s.precision >= 0.95, s.errors
    assert s.recall >= 0.95, s.errors
