"""Language, script share, keywords, story kind, counts, Buckwalter, and the output contract."""

from __future__ import annotations

import json

import pytest

from worker.enrichment import ENRICHMENT_VERSION

KEYS = {"version", "language", "arabic_share", "dateline", "agencies", "places", "dates", "keywords",
        "kind", "counts", "title_bw"}


def test_output_contract_is_json_and_stable(enriched) -> None:
    title = "عائلات مقاتلي داعش الأجانب تفر من آخر جيب بشرق سوريا"
    body = "دبي (رويترز) - خرج عشرات من عائلات المقاتلين من آخر معقل في شرق سوريا الثلاثاء."
    first = enriched(title, body)
    assert set(first) == KEYS and first["version"] == ENRICHMENT_VERSION
    assert json.loads(json.dumps(first, ensure_ascii=False)) == first
    assert enriched(title, body) == first


def test_arabic_story(enriched) -> None:
    out = enriched("أوباما سيكشف غدًا النقاب عن خطة تتصدى لتغير المناخ",
                   "قال مسؤول كبير بالادارة الاميركية إن الرئيس سيعلن خطته للتصدي لانبعاثات الغازات.")
    assert out["language"] == "ar" and out["arabic_share"] == 1.0


def test_non_arabic_story_is_marked_not_rejected(enriched) -> None:
    out = enriched("Markets close higher in Dubai",
                   "Dubai's main index rose 0.65 percent on Sunday, led by banks and real estate shares.")
    assert out["language"] == "en" and out["arabic_share"] == 0.0
    assert out["title_bw"] == "Markets close higher in Dubai"
    assert out["counts"]["words"] > 10


def test_persian_is_not_taken_for_arabic(enriched) -> None:
    out = enriched(None, "این یک گزارش خبری است که در تهران نوشته شده و درباره اقتصاد ایران است")
    assert out["language"] == "fa" and out["arabic_share"] > 0.9


def test_mixed_language_share(enriched) -> None:
    out = enriched(None, "أعلنت شركة سونيك وول أن حلول IPSec VPN متوافقة مع تقنية IP Telephony من أفايا")
    assert out["language"] == "ar"
    assert 0.5 < out["arabic_share"] < 0.9


def test_language_hint_breaks_a_tie_only_when_unsure(enriched) -> None:
    assert enriched(None, "؟؟ 123", language_hint="ar")["language"] == "ar"
    assert enriched(None, "The minister said the talks would resume", language_hint="ar")["language"] == "en"


def test_keywords_drop_stop_words_and_merge_proclitic_forms(enriched) -> None:
    out = enriched("الكشف عن شعار أولمبياد طوكيو 2020",
                   "كشفت اللجنة المنظمة لدورة الالعاب الاولمبية في طوكيو عن الشعار.\n"
                   "ويتضمن الشعار حرف تي مع اعمدة سوداء.\n"
                   "وقال إن الشعار يشير إلى طوكيو وإن بالشعار ألوانا.")
    terms = [k["term"] for k in out["keywords"]]
    assert terms[:2] == ["الشعار", "طوكيو"] or terms[:2] == ["طوكيو", "الشعار"]
    shield = next(k for k in out["keywords"] if k["term"] == "الشعار")
    assert shield["count"] == 5  # شعار, الشعار x3, بالشعار
    assert not {"في", "عن", "إن", "وقال", "قال", "مع"} & set(terms)


@pytest.mark.parametrize(("title", "body", "kind"), [
    ("عاجل.. انفجار في العاصمة", "قالت مصادر أمنية إن انفجارا وقع", {"urgent"}),
    ("تصحيح: وزير الخارجية يصل إلى القاهرة الأحد", "يصل الوزير الأحد وليس السبت", {"correction"}),
    ("(محدث) ارتفاع حصيلة ضحايا الزلزال", "ارتفعت حصيلة الضحايا إلى 40", {"update"}),
    ("تحديث - الأسهم السعودية تغلق مرتفعة", "أغلق المؤشر مرتفعا", {"update"}),
    ("تحديث نظام المرور في جدة", "بدأت إدارة المرور تحديث أنظمتها", set()),
    ("تصحيح مسار العلاقات بين البلدين", "دعا الملك إلى تصحيح مسار سياستها", set()),
])
def test_kind(enriched, title: str, body: str, kind: set[str]) -> None:
    out = enriched(title, body)["kind"]
    assert {k for k, v in out.items() if v} == kind


def test_counts_and_buckwalter(enriched) -> None:
    body = "\n".join(["كلمة " * 100, "كلمة " * 100, "كلمة " * 100])
    out = enriched("عائلات مقاتلي داعش", body)
    assert out["counts"] == {"words": 300, "paragraphs": 3, "reading_minutes": 3}
    assert out["title_bw"] == "EA}lAt mqAtly dAE$"
    assert enriched(None, "نص قصير")["title_bw"] is None
