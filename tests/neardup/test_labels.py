"""The benchmark's ground truth for natural reprints: hand-checked pairs, and per-paragraph word counts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bench import corpus_variants as cv
from worker.neardup import signature
from worker.stages.normalize import normalize


def test_checked_pairs_decide_ambiguous_pairs_and_override_the_rule() -> None:
    rule = cv.NaturalLabels(
        positive={"a": {"b"}, "b": {"a"}, "h": {"i"}, "i": {"h"}},
        ambiguous={"a": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"g"}, "g": {"f"}},
        positive_pairs=2,
        ambiguous_pairs=3,
        pairs_checked=5,
        ids=frozenset("abcdefghij"),
    )
    checked = {
        ("a", "c"): True,
        ("d", "e"): False,
        ("h", "i"): False,  # the rule said same: read as two stories
        ("a", "j"): True,  # the rule said different: read as one story
        ("a", "b"): True,  # agrees with the rule
        ("x", "y"): True,  # not on these days
    }
    decided = cv.apply_checked(rule, checked)
    assert decided.positive["a"] == {"b", "c", "j"} and decided.positive["c"] == {"a"}
    assert decided.positive["j"] == {"a"}
    assert "e" not in decided.positive.get("d", set())  # read as different: no label at all
    assert not decided.positive["h"] and not decided.positive["i"]
    assert not decided.ambiguous["a"] and not decided.ambiguous["d"] and not decided.ambiguous["e"]
    assert decided.ambiguous["f"] == {"g"}  # not checked: stays out of the scores
    assert "x" not in decided.positive and "y" not in decided.positive
    # positives: a-b (rule), a-c (checked), a-j (overridden); h-i removed.
    assert (decided.positive_pairs, decided.ambiguous_pairs, decided.hand_checked) == (3, 1, 4)
    # The rule's labels are not modified in place.
    assert rule.ambiguous["a"] == {"c"} and rule.positive["a"] == {"b"} and rule.positive["h"] == {"i"}


def test_checked_pairs_file_names_benchmark_articles_only() -> None:
    checked = cv.load_checked()
    assert len(checked) >= 100
    days = set(cv.TUNE_DAYS) | set(cv.TEST_DAYS) | set(cv.FRESH_DAYS) | set(cv.LAST_DAYS)
    split = {
        day: name
        for name, split_days in (("tune", cv.TUNE_DAYS), ("test", cv.TEST_DAYS), ("fresh", cv.FRESH_DAYS),
                                 ("last", cv.LAST_DAYS))
        for day in split_days
    }
    pattern = re.compile(r"^saudinewsnet/(\d{4}-\d\d-\d\d)/[a-z0-9]+/\d{4}$")
    for a, b in checked:
        assert a < b
        for article in (a, b):
            found = pattern.match(article)
            assert found and found.group(1) in days, article
        # A pair never spans two splits (the tuning and either held-out split).
        assert split[a.split("/")[1]] == split[b.split("/")[1]], (a, b)
    assert {True, False} <= set(checked.values())


def test_paragraph_word_counts_leave_out_punctuation_and_empty_lines() -> None:
    body = "الرياض - واس : أعلنت الوزارة اليوم ، عن مشروع جديد .\n\n« نص » بين علامتين\nسطر ثالث هنا"
    n = normalize(title="عنوان الخبر", body=body)
    lines = n.match_body.split("\n")
    expected = [sum(1 for w in line.split() if w.isalnum()) for line in lines]
    sig = signature(
        match_title=n.match_title,
        match_body=n.match_body,
        paragraphs_match=lines,
        published_at=datetime(2015, 7, 22, tzinfo=UTC),
        source="spa",
    )
    assert list(sig.paragraph_words) == [c for c in expected if c]
    assert sig.n_words == sum(expected)
    # The same counts when the paragraphs are given apart from the body.
    other = signature(
        match_title=n.match_title,
        match_body=n.match_body,
        paragraphs_match=[line for line in lines if line][:2],
        published_at=datetime(2015, 7, 22, tzinfo=UTC),
        source="spa",
    )
    assert list(other.paragraph_words) == [c for c in expected if c][:2]
