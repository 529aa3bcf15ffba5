"""One memo serves the signature's token hashes and the keywords' terms: whatever it holds (cold,
warm from other stories, turning over every few tokens), both give what the token's own values give."""

from __future__ import annotations

import importlib

import pytest

from tests.conftest import read_corpus
from worker import tokens
from worker.enrichment import text
from worker.memo import TokenMemo
from worker.stages.normalize import normalize

signature_module = importlib.import_module("worker.neardup.signature")


def _stories(n: int) -> list[tuple[str, str]]:
    out = []
    for article in read_corpus(n):
        norm = normalize(title=article["title"], body=article["body"])
        out.append((norm.match_title, norm.match_body))
    return out


def _both(stories: list[tuple[str, str]]) -> list[tuple[list, bytes]]:
    sign = signature_module.signature
    return [(text.keywords(t, b), sign(match_title=t, match_body=b, published_at=None, source="s").to_bytes())
            for t, b in stories]


def test_each_token_holds_its_hash_and_its_term() -> None:
    words = ["والعراق", "العراق", "في", "2024", "،", "الرياض", "وبالعراق", "abc", "12", "ل"]
    assert tokens.FACTS.many(words) == [(tokens.flagged_hash(w), tokens.term(w) or "") for w in words]
    assert tokens.term("والعراق") == tokens.term("العراق") == "عراق"
    assert tokens.term("في") is None  # a stop word
    assert tokens.flagged_hash("،") & tokens.PUNCT and tokens.flagged_hash("2024") & tokens.NUMBER
    assert tokens.flagged_hash("نواكشوط") & tokens.ANCHOR and not tokens.flagged_hash("في") & tokens.ANCHOR


@pytest.mark.parametrize("generation", [3, 50, 50_000])
def test_keywords_and_signatures_do_not_depend_on_what_the_memo_holds(monkeypatch: pytest.MonkeyPatch,
                                                                      generation: int) -> None:
    stories = _stories(60)
    # Reference: each token's values computed directly, no memo at all.
    class Direct:
        def many(self, words):  # type: ignore[no-untyped-def]
            return [tokens.facts(w) for w in words]

        def one(self, word):  # type: ignore[no-untyped-def]
            return tokens.facts(word)

    monkeypatch.setattr(text, "FACTS", Direct())
    monkeypatch.setattr(signature_module, "FACTS", Direct())
    expected = _both(stories)
    shared = TokenMemo(tokens.facts, generation)
    monkeypatch.setattr(text, "FACTS", shared)
    monkeypatch.setattr(signature_module, "FACTS", shared)
    assert _both(stories) == expected  # cold, the two stages filling one memo by turns
    assert _both(list(reversed(stories)))[::-1] == expected  # warm, in another order
    assert len(shared) <= 2 * generation
