"""Places: proclitics, the article, multi-word names, ambiguous names and common-word guards.

Sentences are quoted from the development corpus (SaudiNewsNet, CC BY-NC-SA 4.0; SANAD, CC BY
4.0; see tests/data/README.md) or from the seed story.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producers.records import parse_seed
from worker.enrichment.gazetteer import load, proclitic_forms, unresolved_curated_cities

SEED = Path(__file__).resolve().parents[2] / "seeds" / "000_7b75cc1a696a820f.txt"


def names(out: dict[str, Any], kind: str | None = None) -> set[str]:
    return {p["name"] for p in out["places"] if kind is None or p["kind"] == kind}


def test_seed_story_places_agency_and_no_false_city(enriched) -> None:
    delivery = parse_seed(SEED.read_bytes(), stem=SEED.stem, max_bytes=1 << 20)
    out = enriched(delivery.title, delivery.body, format="seed")
    assert {"Syria", "Iraq", "United States", "Deir ez-Zor", "Ar Raqqah"} <= names(out)
    assert names(out, "city") == {"Deir ez-Zor", "Ar Raqqah"}
    assert [a["name"] for a in out["agencies"]] == ["Reuters"]
    syria = next(p for p in out["places"] if p["name"] == "Syria")
    assert syria["country_code"] == "SY" and syria["kind"] == "country"
    assert syria["mentions"] >= 10
    raqqa = next(p for p in out["places"] if p["name"] == "Ar Raqqah")
    assert raqqa["country_code"] == "SY" and 35 < raqqa["lat"] < 37 and 38 < raqqa["lon"] < 40


@pytest.mark.parametrize(("sentence", "expected"), [
    ("عائلات مقاتلي داعش الأجانب تفر من آخر جيب بشرق سوريا", {"Syria"}),
    ("ولكنه أضاف أن تنظيم الدولة الإسلامية هو الخطر الرئيسي في سوريا والعراق", {"Syria", "Iraq"}),
    ("يمارس دوره السياسي قبل أن يعود إلى بغداد ويزور للعراق وفدا", {"Baghdad", "Iraq"}),
    ("خلال ترؤسه امس بالرياض اجتماعًا للحكومة اليمنية", {"Riyadh"}),
    ("فمصر ثار الشعب على نتائج ثورته", {"Egypt"}),
    ("وتقدمت قوات سوريا الديمقراطية نحو دير الزور بعد استيلائها على الرقة",
     {"Syria", "Deir ez-Zor", "Ar Raqqah"}),
    ("أصيبت امرأة بطلق ناري في محافظة حفر الباطن", {"Hafar Al-Batin"}),
    ("أعلنت 7 دول، على رأسها السعودية والإمارات والبحرين ومصر قطع العلاقات مع قطر",
     {"Saudi Arabia", "United Arab Emirates", "Bahrain", "Egypt", "Qatar"}),
])
def test_names_with_proclitics_and_article(enriched, sentence: str, expected: set[str]) -> None:
    assert names(enriched(None, sentence)) == expected


def test_full_names_are_one_mention(enriched) -> None:
    out = enriched(None, "لقد اختارت البحرين التضامن مع المملكة العربية السعودية الشقيقة "
                         "وزار دولة الإمارات العربية المتحدة")
    by_name = {p["name"]: p["mentions"] for p in out["places"]}
    assert by_name == {"Bahrain": 1, "Saudi Arabia": 1, "United Arab Emirates": 1}


def test_oman_and_amman_by_context(enriched) -> None:
    jordan = enriched("ولي ولي العهد يصل إلى الأردن",
                      "وكان في استقباله أمين عمان عقل بلتاجي وعدد من المسؤولين في السفارة السعودية بعمان.")
    assert "Amman" in names(jordan) and "Oman" not in names(jordan)
    oman = enriched(None, "استعرض سلطان عُمان قابوس بن سعيد، خلال استقباله رئيس الوزراء الإيطالي، "
                          "مسيرة العلاقات العمانية الإيطالية")
    assert "Oman" in names(oman) and "Amman" not in names(oman)
    sultanate = enriched(None, "يشارك عدد من الباعة في الموسم السياحي من سلطنة عمان والإمارات")
    assert "Oman" in names(sultanate)
    capital = enriched(None, "عقدت القمة في العاصمة الأردنية عمان أمس")
    assert "Amman" in names(capital)


@pytest.mark.parametrize("sentence", [
    # "باليمن" is "with blessings" here, not Yemen.
    "سائلًا الله أن يعيد هذه المناسبة السعيدة على وطننا باليمن والمسرات",
    # "درعاً" is a shield, "صيداً" is prey, "مشهد" a scene, "الخبر" the news.
    "فيما تسلم وكيل الإمارة درعاً تذكارياً بهذه المناسبة",
    "لم تكن لتحلم أن نكون صيدا سهلا لهذه الدرجة",
    "في مشهد مؤثر وسط حضور كبير",
    "رابط الخبر بصحيفة الوئام: مواطن يهشم رأس زوجته",
    "وجاء في الخبر أن المشروع تأخر",
    # Adjectives that look like country names.
    "أغلق المؤشر العام للسوق المالية السعودية عند مستوى 9098 نقطة",
    "وقالت مصادر سورية إن الاشتباكات مستمرة",
    "أعلن المرصد أن 12 سوريا قتلوا في قصف لطيران النظام",
    # Prayer times, newspaper names, a person's name.
    "بعد صلاة المغرب مباشرة اجتمع الأهالي",
    "وقال العنزي في حديثه إلى \"الوطن\" إن الرسوم مهمة",
    "وأفاد المتحدث سوتوبو بيرو نوجروهو أن الزلزال ضرب الإقليم",
    "بدر الجبل- سبق- متابعة: وصل إلى أرض الوطن",
    # A tournament, a sea, a club.
    "بسبب مشاركاته مع منتخب بلاده في بطولة كوبا أميركا",
    "تراجع النشاط في خليج غينيا وشرق القارة",
    "كما لعب روميرو لفريق موناكو الفرنسي",
])
def test_common_words_are_not_places(enriched, sentence: str) -> None:
    assert enriched(None, sentence)["places"] == []


def test_cue_words_turn_a_common_word_into_a_city(enriched) -> None:
    assert names(enriched(None, "افتتح أمير المنطقة مشروعا جديدا في مدينة الخبر")) == {"Khobar"}
    assert names(enriched(None, "وصل الوفد إلى مدينة العين ظهر اليوم")) == {"Al Ain City"}


def test_newspaper_and_club_names_are_not_places(enriched) -> None:
    assert enriched(None, "يبدأ مراسل صحيفة «واشنطن بوست» عامه الثاني قيد الاعتقال")["places"] == []
    assert "Washington" in names(enriched(None, "ودعت واشنطن السلطات الإيرانية إلى الإفراج عن الصحافي"))
    sports = enriched(None, "انتقد سياسيون مهاجم فريق برشلونة لكرة القدم ليونيل ميسي بعد المباراة")
    assert "Barcelona" not in names(sports)
    assert "Milan" not in names(enriched(None, "يخضع اللاعب سولي مونتاري لاعب ميلان الإيطالي السابق للفحص"))
    assert "Milan" in names(enriched(None, "المنصور المتواجد في مدينة ميلانو الايطالية"))
    assert "Madrid" not in names(enriched(None, "عندما تركت ريال مدريد من أجل العودة إلى تشيلسي"))


def test_country_places_carry_capital_coordinates(enriched) -> None:
    out = enriched(None, "اعتقال 30 مهاجرًا غير شرعي جنوبي ليبيا")
    (libya,) = out["places"]
    assert libya["name"] == "Libya" and libya["country_code"] == "LY"
    assert 32 < libya["lat"] < 33.5 and 12.5 < libya["lon"] < 14  # Tripoli


def test_proclitic_forms() -> None:
    forms = dict(proclitic_forms("العراق"))
    assert {"والعراق", "بالعراق", "للعراق", "وللعراق", "فالعراق"} <= set(forms)
    assert forms["للعراق"] == "ل"
    assert dict(proclitic_forms("دير الزور"))["بدير الزور"] == "ب"


def test_curated_lexicon_resolves_and_lebanon_is_not_a_proclitic_form() -> None:
    assert unresolved_curated_cities() == []
    gz = load()
    (entry,) = gz.forms["لبنان"]
    assert entry.proclitic == "" and entry.places[0].name == "Lebanon"
