"""The fast match form equals CAMeL Tools' chain on real Arabic news, and content hashes follow it.

The development corpus (``../shared/corpus/articles.jsonl.gz``, see its SOURCES.md) has the noise a
real feed has: NBSP, tatweel, harakat, zero-width and bidi marks, control characters, presentation
forms. A sample runs in the default tier; the slow tier compares every title and paragraph.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from producers.records import split_paragraphs
from worker.stages.normalize import match_form_reference, normalize
from worker.stages.normalize_fast import match_form_fast

# One article in SAMPLE_EVERY: about 870 articles, 4,000 paragraphs, spread over every source.
SAMPLE_EVERY = 20


def iter_articles(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rb") as fh:
        for line in fh:
            yield orjson.loads(line)


def texts_of(article: dict) -> list[str]:
    """What the normalize stage feeds to the match form: the title and each paragraph."""
    return [article.get("title") or "", *split_paragraphs(article.get("body") or "")]


def mismatches(texts: set[str]) -> list[str]:
    return [t for t in texts if match_form_fast(t) != match_form_reference(t)]


@pytest.fixture(scope="module")
def sample(corpus_path: Path) -> list[dict]:
    return [a for i, a in enumerate(iter_articles(corpus_path)) if i % SAMPLE_EVERY == 0]


def test_fast_equals_reference_on_a_corpus_sample(sample: list[dict]) -> None:
    texts = {t for article in sample for t in texts_of(article)}
    assert len(texts) > 3_000
    assert {a["source_dataset"] for a in sample} >= {"SaudiNewsNet", "SANAD-AlKhaleej"}
    bad = mismatches(texts)
    assert bad == [], f"{len(bad)} of {len(texts)} texts differ, first: {bad[:3]!r}"


@pytest.mark.slow
def test_fast_equals_reference_on_every_title_and_paragraph(corpus_path: Path) -> None:
    # Every distinct text is compared, the reference included; repeated paragraphs (bylines,
    # reprinted wire copy) are compared once.
    articles = 0
    texts: set[str] = set()
    for article in iter_articles(corpus_path):
        articles += 1
        texts.update(texts_of(article))
    assert articles == 17_363
    assert len(texts) > 80_000
    bad = mismatches(texts)
    assert bad == [], f"{len(bad)} of {len(texts)} texts differ, first: {bad[:3]!r}"


# --- content_hash follows the match form -----------------------------------------------------

ARABIC_LETTERS = {chr(c) for c in range(0x0621, 0x064B)} - {"\u0640"}
NOISE = ["\u064e", "\u064f", "\u0650", "\u0651", "\u0652", "\u064b", "\u0640", "\u0640\u0640"]
DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def add_feed_noise(text: str, rng: random.Random) -> str:
    """The same text as another outlet's copy might carry it: harakat, tatweel, NBSP, Arabic digits.

    Marks go only between two Arabic letters, where NFKC cannot compose them with anything.
    """
    out: list[str] = []
    for i, ch in enumerate(text):
        out.append(ch)
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if ch in ARABIC_LETTERS and nxt in ARABIC_LETTERS and rng.random() < 0.15:
            out.append(rng.choice(NOISE))
    noisy = "".join(out).translate(DIGITS)
    return noisy.replace(" ", "\u00a0") if rng.random() < 0.5 else noisy.replace(" ", " \u200f")


def test_content_hash_is_equal_exactly_when_match_forms_are(sample: list[dict]) -> None:
    results = [normalize(title=a.get("title"), body=a["body"]) for a in sample]
    forms = {(r.match_title, r.match_body) for r in results}
    hashes = {r.content_hash for r in results}
    # Different match forms never share a hash; equal ones (the corpus has reprints) always do.
    assert len(hashes) == len(forms)
    by_form: dict[tuple[str, str], set[str]] = {}
    for r in results:
        by_form.setdefault((r.match_title, r.match_body), set()).add(r.content_hash)
    assert all(len(h) == 1 for h in by_form.values())
    assert len(forms) > 0.9 * len(sample)


def test_content_hash_ignores_feed_noise_and_sees_real_edits(sample: list[dict]) -> None:
    rng = random.Random(20190212)
    changed_noise = 0
    for article in sample[:300]:
        title, body = article.get("title"), article["body"]
        original = normalize(title=title, body=body)
        noisy_title = add_feed_noise(title, rng) if title else title
        noisy_body = add_feed_noise(body, rng)
        changed_noise += noisy_body != body
        assert normalize(title=noisy_title, body=noisy_body).content_hash == original.content_hash
        # A real edit: one more word, or the last paragraph dropped.
        paragraphs = split_paragraphs(body)
        assert normalize(title=title, body=body + " عاجل").content_hash != original.content_hash
        if len(paragraphs) > 1 and original.match_body.split("\n")[-1]:
            shorter = "\n".join(paragraphs[:-1])
            assert normalize(title=title, body=shorter).content_hash != original.content_hash
    assert changed_noise > 250
