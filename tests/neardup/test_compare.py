"""Grouping of each class on real corpus articles: signature() + compare()."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from bench import corpus_variants as cv
from tests.conftest import read_corpus
from worker.neardup import DEFAULT_THRESHOLDS, Signature, compare, signature
from worker.stages.normalize import normalize

T0 = datetime(2015, 7, 22, 8, 0, tzinfo=UTC)


def sig(title: str | None, body: str, *, source: str = "spa", at: datetime = T0) -> Signature:
    n = normalize(title=title, body=body)
    return signature(
        match_title=n.match_title,
        match_body=n.match_body,
        paragraphs_match=n.match_body.split("\n"),
        published_at=at,
        source=source,
    )


@pytest.fixture(scope="module")
def articles() -> list[dict]:
    """Real SaudiNewsNet articles with at least four paragraphs and a headline."""
    rows = [r for r in read_corpus(1500) if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(cv._paras(r["body"])) >= 4 and len(r["body"].split()) >= 120]
    assert len(rows) >= 40
    return rows[:40]


def test_signature_round_trips_and_is_compact(articles: list[dict]) -> None:
    for row in articles[:10]:
        s = sig(row["title"], row["body"])
        assert Signature.from_bytes(s.to_bytes()) == s
        record = s.to_bytes(record=True)  # what Redis keeps
        back = Signature.from_bytes(record)
        assert back.minima == b"" and back.body_bits == 8 and back.anchors == s.anchors
        assert compare(back, s).label == "duplicate"
        assert len(record) < 330


def test_surface_variants_keep_the_signature(articles: list[dict]) -> None:
    rnd = random.Random(3)
    for row in articles[:10]:
        base = sig(row["title"], row["body"])
        variant = sig(
            cv.surface_variant(row["title"], rnd),
            "\n".join(cv.surface_variant(p, rnd) for p in cv._paras(row["body"])),
        )
        assert compare(base, variant).label == "duplicate"


@pytest.mark.parametrize("edit", ["typo", "headline_reword", "punctuation", "sentence_drop", "sentence_add"])
def test_small_edits_from_the_same_source_are_near_duplicates(articles: list[dict], edit: str) -> None:
    rnd = random.Random(edit)
    labels = []
    for row in articles:
        paras = cv._paras(row["body"])
        title = row["title"]
        if edit == "typo":
            new_paras = cv.typo_edit(paras, rnd, 2)
        elif edit == "headline_reword":
            new_paras, title = paras, cv.reword_title(title, rnd)
        elif edit == "punctuation":
            new_paras = cv.punctuation_edit(paras, rnd)
        elif edit == "sentence_drop":
            new_paras = cv.sentence_drop(paras, rnd) or paras
        else:
            new_paras = cv.sentence_add(paras, rnd)
        verdict = compare(
            sig(row["title"], row["body"]), sig(title, "\n".join(new_paras), at=T0 + timedelta(hours=1))
        )
        labels.append(verdict.label)
    # Some punctuation edits (the Arabic comma, spacing) leave the match form as it was: a duplicate.
    expected = ("near_duplicate", "duplicate") if edit == "punctuation" else ("near_duplicate",)
    # Dropping one sentence of a two-sentence paragraph can make it a different paragraph, and so an
    # update: the benchmark measures how often (near_duplicate -> update in its confusion table).
    share = 0.8 if edit == "sentence_drop" else 0.95
    assert sum(label in expected for label in labels) >= share * len(labels), labels


def test_reprint_by_another_outlet_is_a_near_duplicate(articles: list[dict]) -> None:
    rnd = random.Random(7)
    labels = []
    for row in articles:
        paras = cv.dateline_edit(cv.typo_edit(cv._paras(row["body"]), rnd, 1), rnd)
        verdict = compare(
            sig(row["title"], row["body"], source="spa"),
            sig(
                cv.reword_title(row["title"], rnd),
                "\n".join(paras[:-1]),
                source="okaz",
                at=T0 + timedelta(hours=3),
            ),
        )
        labels.append(verdict.label)
    assert labels.count("near_duplicate") >= 0.95 * len(labels), labels


def test_paragraphs_added_is_an_update_and_names_them(articles: list[dict]) -> None:
    labels = []
    for row in articles:
        paras = cv._paras(row["body"])
        cut = len(paras) // 2
        first = sig(row["title"], "\n".join(paras[:cut]))
        full = sig(row["title"], "\n".join(paras), at=T0 + timedelta(hours=2))
        verdict = compare(first, full)
        labels.append(verdict.label)
        if verdict.label == "update":
            assert set(verdict.paragraphs_added) >= set(range(cut + 1, len(paras))) - {cut}
            assert verdict.paragraphs_removed == ()
    assert labels.count("update") >= 0.9 * len(labels), labels


def test_flash_then_full_story_is_an_update(articles: list[dict]) -> None:
    labels = []
    for row in articles:
        lede = " ".join(cv._sentences(cv._paras(row["body"])[0])[0].split()[:24])
        flash = sig(f"عاجل: {row['title']}", lede, at=T0 - timedelta(minutes=20))
        labels.append(compare(flash, sig(row["title"], row["body"])).label)
    assert labels.count("update") >= 0.9 * len(labels), labels


def test_unrelated_stories_are_different() -> None:
    """AlKhaleej articles of seven sections, all given one publication time: no two are one story."""
    rows = [r for r in read_corpus() if r["source_dataset"] == "SANAD-AlKhaleej"][::20]
    assert len(rows) >= 100
    sigs = [sig(r["title"], r["body"]) for r in rows]
    same = [
        (i, j)
        for i in range(len(sigs))
        for j in range(i + 1, len(sigs))
        if compare(sigs[i], sigs[j]).same_story
    ]
    assert same == []


def test_a_template_story_reprinted_is_the_same_story() -> None:
    """A royal cable reprinted by another paper with small cuts is one story."""
    template = (
        "بعث خادم الحرمين الشريفين الملك سلمان بن عبدالعزيز آل سعود برقية تهنئة لفخامة الرئيس {name} "
        "رئيس {country} بمناسبة ذكرى {day} لبلاده.\n"
        "وأعرب الملك المفدى باسمه واسم شعب وحكومة المملكة العربية السعودية عن أصدق التهاني وأطيب "
        "التمنيات بالصحة والسعادة لفخامته، ولحكومة وشعب {country} الشقيق اطراد التقدم والازدهار."
    )
    text = template.format(name="الباجي قايد السبسي", country="الجمهورية التونسية", day="إعلان الجمهورية")
    a = sig("القيادة تهنئ الرئيس التونسي", text)
    c = sig(
        "المملكة تهنئ الرئيس التونسي",
        text.replace("آل سعود ", "").replace("لفخامة الرئيس", "للرئيس"),
        source="okaz",
        at=T0 + timedelta(hours=5),
    )
    verdict = compare(a, c)
    assert verdict.same_story and verdict.label == "near_duplicate"


def test_a_weak_match_needs_the_headline_or_the_lede(articles: list[dict]) -> None:
    """Another story under its own headline that carries the tail of a story (one page with two
    stories, a shared background paragraph) scores just over the cut on its text: without the
    headline or the lede in common that is no match, even though it carries some of the story's
    numbers and names; under the story's own headline it is."""
    t = DEFAULT_THRESHOLDS
    rule_off = dataclasses.replace(t, weak_score=t.same_story)
    weak = 0
    for a, b in zip(articles[:20], articles[20:40], strict=True):
        pa, pb = cv._paras(a["body"]), cv._paras(b["body"])
        story = sig(a["title"], a["body"])
        for cut, lead in itertools.product(range(1, len(pa)), (1, 2, 3)):
            mixed = "\n".join(pb[:lead] + pa[cut:])
            other = sig(b["title"], mixed, source="okaz")
            without_rule = compare(story, other, rule_off)
            if not (without_rule.same_story and without_rule.score < t.weak_score):
                continue
            weak += 1
            verdict = compare(story, other)
            assert verdict.title < t.weak_title and verdict.lede < t.weak_lede
            assert not verdict.same_story and verdict.label == "different"
            assert compare(story, sig(a["title"], mixed, source="okaz")).same_story
    assert weak >= 3


def test_a_rewritten_reprint_is_matched_by_its_numbers_and_names(articles: list[dict]) -> None:
    """A reprint under a new headline and lede, its paragraphs reordered and reworded (every third
    word gone, so that most word 3-grams differ), is no match on its text alone (under the cut, or a
    weak match without the headline or the lede); stating the same numbers and names within hours
    of the story, it is the same story. With other numbers it is not, and two and a half days later
    the numbers and names no longer vouch for it."""
    t = DEFAULT_THRESHOLDS
    text_only = dataclasses.replace(t, event_hours=-1.0, names_hours=-1.0)
    rescued = 0
    for row in articles:
        story = sig(row["title"], row["body"])
        paras = [
            " ".join(w for i, w in enumerate(p.split()) if i % 3 != 2 or any(c.isdigit() for c in w))
            for p in cv._paras(row["body"])[1:]
        ]
        body = "\n".join(["أفادت مصادر مطلعة بأن الخبر نشر اليوم.", *reversed(paras)])
        soon = sig("تفاصيل جديدة", body, source="okaz", at=T0 + timedelta(hours=2))
        late = sig("تفاصيل جديدة", body, source="okaz", at=T0 + timedelta(hours=60))
        assert compare(story, late).same_story == compare(story, late, text_only).same_story
        if compare(story, soon, text_only).same_story or not compare(story, soon).same_story:
            continue
        rescued += 1
        verdict = compare(story, soon)
        assert verdict.label == "near_duplicate" and verdict.score < t.weak_score
        assert verdict.title < t.weak_title and verdict.lede < t.weak_lede
        renumbered = re.sub(r"\d", lambda m: str((int(m.group()) + 3) % 10), body)
        other_numbers = sig("تفاصيل جديدة", renumbered, source="okaz", at=T0 + timedelta(hours=2))
        assert not compare(story, other_numbers).same_story
    assert rescued >= 5


def test_days_apart_the_same_story_must_hold_the_other(articles: list[dict]) -> None:
    """Half a story under its headline with other paragraphs after it is the same story a day later,
    not four days later (a template story of another day shares that much); the story cut by two
    paragraphs still is, four days later."""
    far = 0
    for a, b in zip(articles[:20], articles[20:40], strict=True):
        pa, pb = cv._paras(a["body"]), cv._paras(b["body"])
        story = sig(a["title"], a["body"])
        mixed = "\n".join(pa[: len(pa) // 2] + pb[:3])
        near = compare(story, sig(a["title"], mixed, source="okaz", at=T0 + timedelta(days=1)))
        later = compare(story, sig(a["title"], mixed, source="okaz", at=T0 + timedelta(days=4)))
        assert near.same_story
        if later.containment < DEFAULT_THRESHOLDS.far_containment:
            far += 1
            assert not later.same_story
        cut = compare(story, sig(a["title"], "\n".join(pa[:-2]), source="okaz", at=T0 + timedelta(days=4)))
        assert cut.same_story and cut.label == "near_duplicate"
    assert far >= 10


def test_stories_outside_the_window_are_different(articles: list[dict]) -> None:
    row = articles[0]
    assert not compare(
        sig(row["title"], row["body"]), sig(row["title"], row["body"] + "\nإضافة.", at=T0 + timedelta(days=8))
    ).same_story


def test_same_story_decision_is_symmetric(articles: list[dict]) -> None:
    rnd = random.Random(11)
    for row in articles[:20]:
        a = sig(row["title"], row["body"])
        b = sig(
            cv.reword_title(row["title"], rnd),
            "\n".join(cv.typo_edit(cv._paras(row["body"]), rnd, 3)),
            source="x",
            at=T0 + timedelta(hours=1),
        )
        assert compare(a, b).same_story == compare(b, a).same_story


def test_signature_vectors_match_their_plain_definitions(articles: list[dict]) -> None:
    """The anchors, numbers and paragraph SimHashes equal their definitions, computed naively."""
    import importlib

    import numpy as np

    module = importlib.import_module("worker.neardup.signature")  # the package exports the function

    long_story = "\n".join(f"الفقرة رقم {i} من التقرير عن السوق {i * 7} ريال" for i in range(60))
    stories = [(a.get("title"), a["body"]) for a in articles[:40]] + [("سوق 12 و 12 و 300", long_story)]
    for title, body in stories:
        n = normalize(title=title, body=body)
        s = sig(title, body)
        hashes = [module._token_hash(w) for w in n.match_body.split() if w.isalnum()]
        title_words = [w for w in module.words(n.match_title) if w not in module._IGNORED_TITLE_WORDS]
        every = [module._token_hash(w) for w in title_words] + hashes
        anchors = sorted({(h >> 20) & 0xFFFF for h in every if h & module.ANCHOR})
        assert s.anchors == np.array(anchors[: module.ANCHOR_SKETCH], dtype="<u2").tobytes()
        assert s.n_anchors == len(anchors)
        distinct = list(dict.fromkeys(h for h in every if h & module.NUMBER))[: module.MAX_NUMBERS]
        assert s.numbers == np.array(sorted({(h >> 36) & 0xFFFF for h in distinct}), dtype="<u2").tobytes()
        simhashes = []
        for line in n.match_body.split("\n"):
            words = [module._token_hash(w) >> 32 for w in line.split() if w.isalnum()]
            if words:
                simhashes.append(
                    sum(1 << b for b in range(32) if 2 * sum((h >> b) & 1 for h in words) > len(words))
                )
        assert s.paragraphs == np.array(simhashes[: module.MAX_PARAGRAPHS], dtype="<u4").tobytes()


@pytest.fixture(scope="module")
def by_id() -> dict[str, dict]:
    wanted = {
        "saudinewsnet/2015-08-01/okaz/1165",  # a drug smuggler executed (Interior Ministry statement)
        "saudinewsnet/2015-08-04/alriyadh/0555",  # a murderer executed, three days later, same statement form
        "saudinewsnet/2015-08-04/aljazirah/0505",  # a column whose body is only the writer's name
        "saudinewsnet/2015-08-04/aljazirah/0531",  # a news item with the same one-word body
    }
    rows = {r["id"]: r for r in read_corpus() if r["id"] in wanted}
    assert set(rows) == wanted
    return rows


def _at(row: dict) -> datetime:
    return datetime.fromisoformat(row["date"]).replace(tzinfo=UTC)


def test_days_apart_the_same_wording_needs_the_same_names(by_id: dict[str, dict]) -> None:
    """Two ministry statements three days apart share their standard wording (the text of one
    nearly holds the other) but not the names: different stories. The later statement re-sent
    four days after it, cut by a paragraph, keeps its names: the same story."""
    first, later = by_id["saudinewsnet/2015-08-01/okaz/1165"], by_id["saudinewsnet/2015-08-04/alriyadh/0555"]
    a = sig(first["title"], first["body"], source="okaz", at=_at(first))
    b = sig(later["title"], later["body"], source="alriyadh", at=_at(later))
    verdict = compare(a, b)
    assert verdict.hours_apart is not None and verdict.hours_apart > DEFAULT_THRESHOLDS.far_hours
    assert verdict.containment >= DEFAULT_THRESHOLDS.far_containment  # the wording alone would pass
    assert not verdict.same_story
    paragraphs = cv._paras(later["body"])
    resent = sig(later["title"], "\n".join(paragraphs[:-1]), source="okaz", at=_at(later) + timedelta(days=4))
    assert compare(b, resent).same_story


def test_a_body_of_a_few_words_needs_the_headline(by_id: dict[str, dict]) -> None:
    """Two stories whose body is only the writer's name are the same story only under one headline."""
    x, y = by_id["saudinewsnet/2015-08-04/aljazirah/0505"], by_id["saudinewsnet/2015-08-04/aljazirah/0531"]
    assert len(x["body"].split()) < DEFAULT_THRESHOLDS.tiny_words
    a = sig(x["title"], x["body"], source="aljazirah", at=_at(x))
    assert not compare(a, sig(y["title"], y["body"], source="aljazirah", at=_at(y))).same_story
    again = compare(a, sig(x["title"] + "!", x["body"], source="aljazirah", at=_at(x) + timedelta(hours=1)))
    assert again.same_story


def test_comparing_a_story_with_all_its_candidates_at_once_gives_each_pair_s_verdict(
        articles: list[dict]) -> None:
    """compare_many (a story against its candidates, vectors compared for all of them at once) is
    compare pair by pair: candidates as Redis keeps them (8-bit bodies), as the database keeps
    them (16-bit), and the two mixed (compared one pair at a time)."""
    from worker.neardup import compare_many

    rnd = random.Random(11)
    stories = []
    for row in articles[:20]:
        paras = cv._paras(row["body"])
        stories.append(sig(row["title"], row["body"]))
        stories.append(sig(row["title"], "\n".join(paras[:-1]), source="okaz", at=T0 + timedelta(hours=2)))
        stories.append(sig(cv.surface_variant(row["title"], rnd),
                           "\n".join(cv.surface_variant(p, rnd) for p in paras)))
    records = [Signature.from_bytes(s.to_bytes(record=True)) for s in stories]
    seen: set[str] = set()
    for i, newer in enumerate(stories):
        olders = [*rnd.sample(records, 12), records[i ^ 1], records[i]]
        for candidates in (olders, [stories[j] for j in range(len(stories)) if j % 7 == i % 7],
                           olders[:3] + stories[:3], olders[:1], []):
            verdicts = compare_many(candidates, newer)
            assert verdicts == [compare(older, newer) for older in candidates]
            seen.update(v.label for v in verdicts)
    assert {"duplicate", "near_duplicate", "different"} <= seen
