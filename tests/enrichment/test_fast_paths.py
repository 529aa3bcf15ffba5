"""The enrichment's fast paths give what the plain definitions give."""

from __future__ import annotations

import re

import pytest

from worker import tokens
from worker.enrichment import text
from worker.stages.normalize import match_form

SAMPLES = [
    "",
    "123 456 — 789",
    "أعلنت وزارة الصحة اليوم عن افتتاح مستشفى جديد في مدينة جدة.",
    "قال الرئيس Emmanuel Macron إن باريس stands with Beirut.",
    "سلام دنیا، این یک متن فارسی است با پ و چ و گ",
    "Привет, мир! Ελληνικά κείμενα και العربية معا",
    "مُحَمَّدٌ ـــ «عاجل» … ١٢٣ ۴۵۶ ﷺ ﷽ _under_score_",
    "naïve café, façade; Straße",
    "😀 مرحبا 𝐀𝐁 عالم \U0001e900 ٱلكتاب ۿ",
]


def reference_share(value: str) -> float:
    """Arabic letters over all letters, counted character by character."""
    arabic_ranges = ((0x621, 0x63B), (0x641, 0x64B), (0x671, 0x6D4), (0x6FA, 0x700))
    is_arabic = [any(a <= ord(c) < b for a, b in arabic_ranges) for c in value]
    excluded = set(text._NOT_OTHER)
    arabic = sum(is_arabic)
    others = sum(1 for c, ar in zip(value, is_arabic, strict=True)
                 if not ar and c not in excluded and re.fullmatch(r"[^\W\d_]", c))
    letters = arabic + others
    return round(arabic / letters, 3) if letters else 0.0


@pytest.mark.parametrize("value", SAMPLES)
def test_arabic_share_counts_letters_like_the_definition(value: str) -> None:
    assert text.arabic_share(value) == reference_share(value)


def exhaustive_kind(match_title: str, first_line: str) -> dict[str, bool]:
    out = {}
    for kind, markers in text._markers().items():
        found = False
        for value in (match_title, " ".join(first_line.split()[:8])):
            tokens = value.split()
            for size in (3, 2, 1):
                for i in range(len(tokens) - size + 1):
                    if " ".join(tokens[i:i + size]) in markers:
                        before = tokens[i - 1] if i else ""
                        after = tokens[i + size] if i + size < len(tokens) else ""
                        edge = before in text._LABEL_EDGE or after in text._LABEL_EDGE
                        found = found or kind == "urgent" or edge
        out[kind] = found
    return out


@pytest.mark.parametrize(("title", "first_line"), [
    ("عاجل: انفجار في المرفأ", "بيروت - قال مسؤولون"),
    ("تحديث نظام المرور في الرياض", "أعلنت الإدارة العامة للمرور"),
    ("(محدث) ارتفاع عدد الضحايا", "القاهرة (رويترز) -"),
    ("افتتاح معرض الكتاب", "تصحيح: نشر في وقت سابق خطأ"),
    ("خبر عادي تماما", "لا شيء هنا"),
    ("", ""),
])
def test_story_kind_matches_the_exhaustive_search(title: str, first_line: str) -> None:
    title, first_line = match_form(title), match_form(first_line)
    assert text.story_kind(title, first_line) == exhaustive_kind(title, first_line)


@pytest.mark.parametrize("title", [
    "أعلنت وزارة الصحة اليوم عن افتتاح مستشفى جديد",
    "مُحَمَّدٌ ـ «عاجل» ١٢٣ ﷺ",
    "Reuters: سلام دنیا پ چ گ",
    "  مسافات   كثيرة\tهنا  ",
])
def test_buckwalter_headline_matches_camel_tools(title: str) -> None:
    assert text.title_buckwalter(title) == text._BW(" ".join(title.split()))


@pytest.mark.parametrize("token", ["والعراق", "وبالعراق", "بالعراق", "العراق", "للعراق", "وللعراق", "كالبحر",
                                   "فالسلام", "والعب", "الال", "ال", "وال", "بالامس", "لله", "ولل", "لللل",
                                   "والبيت", "وبالي", "abc", ""])
def test_stem_strips_the_first_clitic_that_leaves_three_letters(token: str) -> None:
    def reference(value: str) -> str:
        for prefix in tokens.CLITIC_ARTICLE:
            if value.startswith(prefix) and len(value) - len(prefix) >= 3:
                return value[len(prefix):]
        return value

    assert tokens.stem(token) == reference(token)


def test_keyword_memo_survives_its_generations_turning_over(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.memo import TokenMemo

    title, body = "العراق يستضيف القمة", "والعراق يستضيف القمة العربية في بغداد\nبالعراق قمة عربية جديدة"
    expected = text.keywords(title, body)
    small = TokenMemo(tokens.facts, 3)
    monkeypatch.setattr(text, "FACTS", small)
    assert text.keywords(title, body) == expected
    assert text.keywords(title, body) == expected
    assert len(small) <= 6


def test_token_counts_hold_the_token_set_the_place_rules_read() -> None:
    from worker.enrichment.places import find

    title = match_form("مباراة الهلال والنصر في الرياض")
    body = "\n".join(match_form(p) for p in ("الرياض - واس: أقيمت مباراة الدوري بين الهلال والنصر.",
                                            "وسجل اللاعب هدف الفوز في الملعب أمام الجمهور في طرابلس."))
    counted = text.token_counts(title, body)
    assert set(counted.terms) == set((title + " " + body).split())
    assert find(title, body, counted.terms) == find(title, body)
    assert text.keywords(title, body, counted) == text.keywords(title, body)
    assert text.counts(body, ["a", "b"], counted) == text.counts(body, ["a", "b"])


@pytest.mark.parametrize("title", ["اجتماع يوم الثلاثاء", "", "عنوان\nمن سطرين 5 يونيو"])
def test_find_dates_gives_the_same_dates_with_the_callers_tokens(title: str) -> None:
    from datetime import UTC, datetime

    from worker.enrichment.dates import find_dates

    body = "الرياض - واس: يعقد المجلس اجتماعه الخميس المقبل\nوفي 22 يوليو 2015 أعلن\n\nالأحد 5 رمضان"
    text_ = f"{title}\n{body}"
    tokens = [title.split(), *(line.split() for line in body.split("\n"))]
    at = datetime(2015, 7, 22, tzinfo=UTC)
    assert find_dates(text_, at, line_tokens=tokens) == find_dates(text_, at)
