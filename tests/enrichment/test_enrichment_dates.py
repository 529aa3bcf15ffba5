"""Dates: the three Arabic month families, dual forms, Hijri dates, weekdays, and guards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.enrichment.dates import find_dates
from worker.stages.normalize import match_form

PUBLISHED = datetime(2015, 7, 22, 9, 0, tzinfo=UTC)  # a Wednesday


def dates(text: str, published: datetime | None = PUBLISHED) -> list[tuple[str | None, str]]:
    return [(d["date"], d["calendar"]) for d in find_dates(match_form(text), published)]


@pytest.mark.parametrize(("text", "expected"), [
    ("واعتقل رضايان في 22 يوليو (تموز) 2014 في طهران", [("2014-07-22", "gregorian")]),
    ("تعود اخر خسارة له الى 6 كانون الثاني/ يناير 1999 امام بارما", [("1999-01-06", "gregorian")]),
    ("الذي ينطلق غدا ويستمر حتى 22 أكتوبر/تشرين الأول الجاري", [("2015-10-22", "gregorian")]),
    ("منذ 23 مارس آذار", [("2015-03-23", "gregorian")]),
    ("المقرر في 10 جانفي 2016 بالعاصمة", [("2016-01-10", "gregorian")]),
    ("كادت تقع في الخامس من يونيو الماضي", [("2015-06-05", "gregorian")]),
    ("تحديد يوم تسعة ديسمبر (كانون الأول) المقبل لانطلاق دورته", [("2015-12-09", "gregorian")]),
    ("وكان ترمب قال في ديسمبر/كانون الأول إنه سيسحب قوات بلاده", [("2014-12", "gregorian")]),
    ("ويرحل في سبتمبر أيلول 2007", [("2007-09", "gregorian")]),
    ("ستنتهي بتاريخ 25/ 11/ 1436هـ للعام الحالي", [("2015-09-09", "hijri")]),
    ("اعتمدت الجمعة 16 رمضان 1436هـ الموافق 3 يوليو 2015م",
     [("2015-07-03", "hijri"), ("2015-07-03", "gregorian")]),
    ("خلال الفترة من 4 شوال إلى 6 ذوالقعدة من العام الجاري",
     [("2015-07-20", "hijri"), ("2015-08-21", "hijri")]),
    ("سيعلن يوم الإثنين المقبل خطته", [("2015-07-27", "gregorian")]),
    ("التقى أمس الثلاثاء وزير الخارجية", [("2015-07-21", "gregorian")]),
])
def test_dates(text: str, expected: list[tuple[str, str]]) -> None:
    assert dates(text) == expected


def test_hijri_entry_keeps_the_hijri_date_and_weekday_is_named() -> None:
    (hijri,) = find_dates(match_form("الموعد في 1436/10/15هـ"), None)
    assert hijri["hijri"] == "1436-10-15" and hijri["date"] == "2015-07-31"
    (weekday,) = find_dates(match_form("وصل الوفد الخميس"), PUBLISHED)
    assert weekday["weekday"] == "thursday" and weekday["date"] == "2015-07-16"


def test_without_publication_date_a_yearless_date_has_no_iso_date() -> None:
    (entry,) = find_dates(match_form("تقام المباراة في 9 يونيو"), None)
    assert entry["date"] is None and entry["text"] == "9 يونيو"
    assert [d["date"] for d in find_dates(match_form("غادر الثلاثاء"), None)] == [None]


@pytest.mark.parametrize("text", [
    "مارس الرياضة منذ صغره",       # "practised"
    "تغلب عليه 2 - صفر على ملعبه",  # zero
    "في شهر رمضان المبارك",         # a month without a day or year
    "هو رمضان عبدالله",             # a given name
    "بين الاثنين معا",              # "the two"
])
def test_not_dates(text: str) -> None:
    assert dates(text) == []
