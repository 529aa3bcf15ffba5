"""Datelines and wire agencies, on the heads and attributions of real stories."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


@pytest.mark.parametrize(("body", "place", "place_ar", "agency"), [
    ("دبي (رويترز) - قال كبير المفاوضين الإيرانيين اليوم إن بلاده لن تقبل", "Dubai", "دبي", "Reuters"),
    ("القاهرة - أ ش أ\nأعلنت وزارة الآثار بدء أعمال الحفر", "Cairo", "القاهرة", "MENA"),
    ("الرياض - واس\nأدانت المملكة العربية السعودية الجريمة الإرهابية", "Riyadh", "الرياض", "SPA"),
    ("واس - عدن: تمكنت المقاومة اليمنية الشعبية بمحافظة تعز من التقدم", "Aden", "عدن", "SPA"),
    ("سبق- جدة: نظمت الإدارة العامة للدفاع المدني بمحافظة جدة ورشة عمل", "Jeddah", "جدة", None),
    ("هادي آل كليب- سبق- نجران: بحث أمير منطقة نجران مع سفير ألمانيا", "Najran", "نجران", None),
    ("خالد الشاماني- سبق- المدينة: أسفرت حملة تفتيشية عن ضبط مخالفين", "Madinah", "المدينة", None),
    ("عين اليوم – صنعاء\nنفذت المقاومة الشعبية عمليتين منفصلتين", "Sanaa", "صنعاء", None),
    ("دبي: «الخليج» عاود سوق دبي المالي الصعود بنسبة 0.65%", "Dubai", "دبي", None),
    ("الشارقة: عايدة عبد الحميد كشف مدير المستشفى أن عدد العمليات بلغ", "Sharjah", "الشارقة", None),
    ("رأس الخيمة عدنان عكاشة: أجرى أطباء بمستشفى الشيخ خليفة عملية جراحية", "Ras Al Khaimah",
     "رأس الخيمة", None),
    ("بدر الجبل- سبق- تبوك: وقفت لجنة فنية على المشروع", "Tabuk", "تبوك", None),
])
def test_dateline_shapes(enriched, body: str, place: str, place_ar: str, agency: str | None) -> None:
    dateline = enriched(None, body)["dateline"]
    assert dateline is not None
    assert (dateline["place"], dateline["place_ar"], dateline["agency"]) == (place, place_ar, agency)


def test_dateline_with_date_uses_the_publication_year(enriched) -> None:
    out = enriched(None, "واشنطن، 9 يونيو (رويترز) - قال مسؤولون أمريكيون إن المحادثات ستستأنف",
                   published_at=datetime(2015, 6, 10, tzinfo=UTC))
    dateline = out["dateline"]
    assert dateline["place"] == "Washington" and dateline["agency"] == "Reuters"
    assert dateline["date"] == "2015-06-09"


def test_unknown_place_is_kept_as_written_when_an_agency_vouches(enriched) -> None:
    dateline = enriched(None, "الداير - واس\nدشن محافظ الداير مشروعا جديدا")["dateline"]
    assert dateline["place"] is None and dateline["place_ar"] == "الداير" and dateline["agency"] == "SPA"


@pytest.mark.parametrize("body", [
    "قال مسؤول كبير بالادارة الاميركية، إن الرئيس سيعلن يوم غد عن خطته",
    "نايف عبدالله – عين اليوم\nقام أصغر شعراء القبيلة بإهداء قصيدة",
    "Next Previous أحمد حجازي – عين اليوم\nلا يزال عدد من الأهالي يترقبون",
    "جانب من اللقاء\nأكد أمين عام الجمعية أن الجمعية شرعت في العمل",
])
def test_no_dateline(enriched, body: str) -> None:
    assert enriched(None, body)["dateline"] is None


@pytest.mark.parametrize(("body", "expected"), [
    ("وقال شاهد من \"رويترز\" إن مقاتلات تحلق. وقال القيادي لوكالة \"رويترز\" إنهم يواجهون مقاومة",
     [("Reuters", 2)]),
    ("وقالت مصادر أثرية لوكالة الأنباء الألمانية (د.ب.أ)، إن البعثة بدأت أعمالها", [("dpa", 1)]),
    ("وقالت إلسا جونزاليس لوكالة الأنباء الفرنسية إن الصحافيين فقدوا", [("AFP", 1)]),
    ("وأضاف بحسب ما أوردت وكالة الأنباء الرسمية \"كونا\" أن قطر مستعدة", [("KUNA", 1)]),
    ("وقال في تصريح لوكالة أنباء الإمارات «وام» عشية المعرض. (وام)", [("WAM", 2)]),
    ("وأكدت وكالة رويترز الخبر. وقالت رويترز لاحقا", [("Reuters", 2)]),
    ("استعرض السلطان العلاقات مع الضيف. (العُمانية)", [("ONA", 1)]),
    ("ذكرت وكالة الأنباء القطرية (قنا) أن الأمير استقبل الوزير", [("QNA", 1)]),
])
def test_agencies(enriched, body: str, expected: list[tuple[str, int]]) -> None:
    out = enriched(None, body)
    assert [(a["name"], a["mentions"]) for a in out["agencies"]] == expected


def test_agency_words_that_are_ordinary_words(enriched) -> None:
    # "العمانية" is an adjective here, "بنا" means "with us": no agency.
    out = enriched(None, "دبي «الخليج»: تستأنف الأسواق المحلية والعمانية التداولات. ومر بنا الوقت سريعا")
    assert out["agencies"] == []
    # The agency's name holds a country's name; it is the agency, not a place.
    wam = enriched(None, "وقال في تصريح لوكالة أنباء الإمارات «وام» عشية المعرض")
    assert wam["places"] == [] and [a["name"] for a in wam["agencies"]] == ["WAM"]
