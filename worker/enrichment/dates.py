"""Dates in the match form: Gregorian months of the three Arabic families, Hijri dates, weekdays.

Month names: the Egyptian/Gulf transliterations (يناير ...), the Syriac names of the Levant and
Iraq (كانون الثاني ...), the French-derived Maghrebi names (جانفي ...), and the dual forms papers
print ("ديسمبر/كانون الأول", "يوليو (تموز)", "سبتمبر أيلول"). Month words that are also ordinary
words (مارس "he practised", آب "father", صفر "zero", رمضان a given name) only count next to a day
number or a year. Hijri dates are converted with hijridate (Umm al-Qura calendar, 1343-1500 AH);
a year left out is the one that puts the date nearest the publication date.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from hijridate import Gregorian, Hijri

from worker.stages.normalize import match_form

_GREGORIAN = {
    "يناير": 1, "فبراير": 2, "مارس": 3, "أبريل": 4, "إبريل": 4, "ابريل": 4, "مايو": 5, "يونيو": 6,
    "يونيه": 6, "يوليو": 7, "يوليه": 7, "أغسطس": 8, "سبتمبر": 9, "أكتوبر": 10, "نوفمبر": 11,
    "ديسمبر": 12,
    "كانون الثاني": 1, "شباط": 2, "آذار": 3, "نيسان": 4, "أيار": 5, "حزيران": 6, "تموز": 7,
    "آب": 8, "أيلول": 9, "تشرين الأول": 10, "تشرين الثاني": 11, "كانون الأول": 12,
    "جانفي": 1, "فيفري": 2, "أفريل": 4, "ماي": 5, "جوان": 6, "جويلية": 7, "أوت": 8,
}
_HIJRI = {
    "محرم": 1, "صفر": 2, "ربيع الأول": 3, "ربيع أول": 3, "ربيع الآخر": 4, "ربيع الثاني": 4,
    "ربيع ثاني": 4, "جمادى الأولى": 5, "جمادى الأول": 5, "جمادى الآخرة": 6, "جمادى الثانية": 6,
    "جمادى الآخر": 6, "رجب": 7, "شعبان": 8, "رمضان": 9, "شوال": 10, "ذو القعدة": 11,
    "ذي القعدة": 11, "ذوالقعدة": 11, "ذو الحجة": 12, "ذي الحجة": 12, "ذوالحجة": 12,
}
_WEEKDAYS = {"الاثنين": 0, "الإثنين": 0, "الثلاثاء": 1, "الأربعاء": 2, "الخميس": 3, "الجمعة": 4,
             "السبت": 5, "الأحد": 6}
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ORDINALS = {
    "الأول": 1, "الثاني": 2, "الثالث": 3, "الرابع": 4, "الخامس": 5, "السادس": 6, "السابع": 7,
    "الثامن": 8, "التاسع": 9, "العاشر": 10, "الحادي عشر": 11, "الثاني عشر": 12, "الثالث عشر": 13,
    "الرابع عشر": 14, "الخامس عشر": 15, "السادس عشر": 16, "السابع عشر": 17, "الثامن عشر": 18,
    "التاسع عشر": 19, "العشرين": 20, "الحادي والعشرين": 21, "الثاني والعشرين": 22,
    "الثالث والعشرين": 23, "الرابع والعشرين": 24, "الخامس والعشرين": 25, "السادس والعشرين": 26,
    "السابع والعشرين": 27, "الثامن والعشرين": 28, "التاسع والعشرين": 29, "الثلاثين": 30,
    "الحادي والثلاثين": 31, "واحد": 1, "اثنين": 2, "ثلاثة": 3, "أربعة": 4, "خمسة": 5, "ستة": 6,
    "سبعة": 7, "ثمانية": 8, "تسعة": 9, "عشرة": 10,
}


def _fold(word: str) -> str:
    return match_form(word).strip()


GREGORIAN = {_fold(k): v for k, v in _GREGORIAN.items()}
HIJRI = {_fold(k): v for k, v in _HIJRI.items()}
WEEKDAYS = {_fold(k): v for k, v in _WEEKDAYS.items()}
ORDINALS = {_fold(k): v for k, v in _ORDINALS.items()}


def _alt(words: dict[str, int]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_G = _alt(GREGORIAN)
_H = _alt(HIJRI)
_WD = _alt(WEEKDAYS)
_ORD = _alt(ORDINALS)
_DAY = rf"(?:ال)?(?P<d>\d{{1,2}})|(?P<dw>{_ORD})"
_YEAR = r"(?:(?:من |في )?(?:عام |العام |سنه )?(?P<y>\d{4}) ?(?P<suf>م|ه|هـ)?(?![\d]))"
_REL = r"(?P<rel>الماضي|المقبل|القادم|الجاري|الحالي|المنصرم)"
_SEP = r"(?: ?(?:/|\(|-|،)? ?)"

# "9 يونيو 2015", "الخامس من يونيو", "22 أكتوبر / تشرين الاول الجاري", "يوليو (تموز) 2014".
_GREG_RE = re.compile(
    rf"(?<![^\s])(?:(?:{_DAY}) (?:من )?(?:شهر )?|و)?(?P<m>{_G})(?:{_SEP}(?P<m2>{_G}) ?\)?)?"
    rf"(?: {_YEAR}| {_REL})?(?![^\s])")
_HIJRI_RE = re.compile(
    rf"(?<![^\s])(?:(?:{_DAY}) (?:من )?(?:شهر )?)?(?P<m>{_H})(?: {_YEAR}| {_REL})?(?![^\s])")
_NUMERIC_RE = re.compile(
    r"(?<![^\s])(?P<a>\d{1,4}) ?/ ?(?P<b>\d{1,2}) ?/ ?(?P<c>\d{1,4}) ?(?P<suf>م|ه|هـ)?(?![^\s/])")
_WEEKDAY_RE = re.compile(
    rf"(?<![^\s])(?P<pre>[وف]?)(?P<w>{_WD})(?: (?P<rel>المقبل|القادم|الماضي|المنصرم))?(?![^\s])")
_WEEKDAY_BLOCK_PREV = {"بين", "كلا", "هذين", "ان", "او"}
_WEEKDAY_BLOCK_NEXT = {"معا", "منهما", "منهم"}
_AMBIGUOUS_MONTHS = {_fold(w) for w in ("مارس", "آب", "ماي", "صفر", "رمضان", "رجب", "محرم", "شعبان",
                                         "شوال", "نيسان", "تموز", "جوان", "أيار")}


# First words of the month and weekday names: a story none of whose tokens is one of them skips
# the (comparatively slow) date expressions altogether.
_GREG_FIRST = frozenset(k.split()[0] for k in GREGORIAN)
_HIJRI_FIRST = frozenset(k.split()[0] for k in HIJRI) | {"ذوالقعده", "ذوالحجه"}
_WEEKDAY_TOKENS = frozenset(p + w for w in WEEKDAYS for p in ("", "و", "ف"))


def _split_lines(text: str, tokens: list[list[str]] | None = None) -> list[tuple[int, str, list[str]]]:
    """(offset, line, tokens) of every line of ``text``: tokenized once for all three searches.

    ``tokens`` are the lines' tokens when the caller has them (one list per line of ``text``).
    """
    lines = text.split("\n")
    if tokens is None or len(tokens) != len(lines):
        tokens = [line.split() for line in lines]
    out = []
    pos = 0
    for line, line_tokens in zip(lines, tokens, strict=True):
        out.append((pos, line, line_tokens))
        pos += len(line) + 1
    return out


def _lines_with(lines: list[tuple[int, str, list[str]]], words: frozenset[str]) -> list[tuple[int, str]]:
    """(offset, line) of the lines holding one of ``words`` as a token."""
    return [(pos, line) for pos, line, tokens in lines if not words.isdisjoint(tokens)]


def _iso(d: date) -> str:
    return d.isoformat()


def _year_for(month: int, day: int, rel: str | None, published: date | None) -> int | None:
    """The year of a day and month written without one, from the publication date.

    "الماضي" (last) and "المقبل" (next) decide; a month named alone is taken as the latest one
    not after publication ("في ديسمبر" in a February story is last December); a day and month
    alone keep the publication year.
    """
    if published is None:
        return None
    year = published.year
    if rel in ("الماضي", "المنصرم") and (month, day) > (published.month, published.day):
        year -= 1
    elif rel in ("المقبل", "القادم") and (month, day) < (published.month, published.day):
        year += 1
    return year


def _hijri_to_date(y: int, m: int, d: int) -> date | None:
    try:
        return Hijri(y, m, d).to_gregorian()  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        return None


def _nearest_hijri(m: int, d: int, published: date) -> tuple[int, date] | None:
    """The Hijri year that puts day d of month m nearest the publication date."""
    try:
        hy = Gregorian.fromdate(published).to_hijri().year
    except (ValueError, OverflowError):
        return None
    best: tuple[int, date] | None = None
    for year in (hy - 1, hy, hy + 1):
        g = _hijri_to_date(year, m, d)
        if g is not None and (best is None or abs((g - published).days) < abs((best[1] - published).days)):
            best = (year, g)
    return best


def find_dates(text: str, published_at: datetime | None, display: Any = None,
               line_tokens: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """Dates mentioned in a match-form text, in text order.

    ``display`` maps a (start, end) span of ``text`` to the text as written; without it the
    match form is reported. ``line_tokens``, when given, are ``[line.split() for line in
    text.split("\\n")]``, already computed by the caller.
    """
    published = published_at.date() if published_at else None
    spans: list[tuple[int, int]] = []
    out: list[tuple[int, dict[str, Any]]] = []

    def shown(start: int, end: int) -> str:
        return display(start, end) if display is not None else text[start:end]

    def taken(start: int, end: int) -> bool:
        return any(start < e and s < end for s, e in spans)

    numeric = _NUMERIC_RE.finditer(text) if "/" in text else iter(())
    for m in numeric:
        a, b, c = int(m["a"]), int(m["b"]), int(m["c"])
        suf = m["suf"]
        entry: dict[str, Any] | None = None
        if a > 999:
            y, mo, d = a, b, c
        elif c > 999:
            y, mo, d = c, b, a
        else:
            continue
        if not (1 <= mo <= 12 and 1 <= d <= 31):
            continue
        if (suf in ("ه", "هـ")) or 1300 <= y <= 1500:
            g = _hijri_to_date(y, mo, d)
            if g is not None:
                entry = {"date": _iso(g), "calendar": "hijri", "hijri": f"{y:04d}-{mo:02d}-{d:02d}",
                         "precision": "day"}
        elif 1900 <= y <= 2100:
            try:
                entry = {"date": _iso(date(y, mo, d)), "calendar": "gregorian", "precision": "day"}
            except ValueError:
                entry = None
        if entry is not None:
            spans.append(m.span())
            out.append((m.start(), {"text": shown(*m.span()), **entry}))

    lines = _split_lines(text, line_tokens)
    for regex, calendar, first in ((_GREG_RE, "gregorian", _GREG_FIRST), (_HIJRI_RE, "hijri", _HIJRI_FIRST)):
        table = GREGORIAN if calendar == "gregorian" else HIJRI
        matches = [m for offset, line in _lines_with(lines, first)
                   for m in regex.finditer(text, offset, offset + len(line))]
        for m in matches:
            if taken(*m.span()):
                continue
            month_word = m["m"]
            day = int(m["d"]) if m["d"] else (ORDINALS[m["dw"]] if m["dw"] else None)
            year = int(m["y"]) if m["y"] else None
            rel = m["rel"]
            if day is None and year is None and (month_word in _AMBIGUOUS_MONTHS or calendar == "hijri"):
                continue  # a bare month word that is also a word: "مارس الرياضة", "شهر رمضان"
            if m["dw"] and m["dw"].startswith("ال") and " من " not in m[0]:
                continue  # an ordinal day is written "الخامس من يونيو"
            month = table[month_word]
            if day is not None and not 1 <= day <= 31:
                continue
            entry = None
            if calendar == "gregorian":
                if year is not None and m["suf"] in ("ه", "هـ"):
                    continue
                gy = year if year is not None else _year_for(month, day or 1, rel or (
                    "الماضي" if day is None else None), published)
                if day is not None:
                    try:
                        day_iso = _iso(date(gy, month, day)) if gy is not None else None
                    except ValueError:
                        continue
                    entry = {"date": day_iso, "calendar": "gregorian", "precision": "day"}
                else:
                    entry = {"date": f"{gy:04d}-{month:02d}" if gy is not None else None,
                             "calendar": "gregorian", "precision": "month"}
            else:
                if day is None:
                    entry = {"date": None, "calendar": "hijri", "precision": "month",
                             "hijri": f"{year:04d}-{month:02d}" if year is not None else None}
                elif year is not None:
                    g = _hijri_to_date(year, month, day)
                    entry = {"date": _iso(g) if g else None, "calendar": "hijri", "precision": "day",
                             "hijri": f"{year:04d}-{month:02d}-{day:02d}"}
                elif published is not None:
                    near = _nearest_hijri(month, day, published)
                    entry = {"date": _iso(near[1]) if near else None, "calendar": "hijri",
                             "precision": "day",
                             "hijri": f"{near[0]:04d}-{month:02d}-{day:02d}" if near else None}
                else:
                    entry = {"date": None, "calendar": "hijri", "precision": "day", "hijri": None}
            spans.append(m.span())
            out.append((m.start(), {"text": shown(*m.span()), **entry}))

    weekday_matches = [m for offset, line in _lines_with(lines, _WEEKDAY_TOKENS)
                       for m in _WEEKDAY_RE.finditer(text, offset, offset + len(line))]
    for m in weekday_matches:
        if taken(*m.span()):
            continue
        before = text[:m.start()].rsplit(None, 1)
        prev = before[-1] if before else ""
        after = text[m.end():].split(None, 1)
        nxt = after[0] if after else ""
        if prev in _WEEKDAY_BLOCK_PREV or nxt in _WEEKDAY_BLOCK_NEXT:
            continue
        if nxt[:1].isdigit() or taken(m.end(), m.end() + 12):
            continue  # "الثلاثاء 21 يوليو": the explicit date already covers it
        weekday = WEEKDAYS[m["w"]]
        weekday_iso: str | None = None
        if published is not None:
            rel = m["rel"]
            if rel in ("المقبل", "القادم") or prev in ("غدا", "غد", "بعد"):
                delta = (weekday - published.weekday()) % 7 or 7
                weekday_iso = _iso(published + timedelta(days=delta))
            else:
                delta = (published.weekday() - weekday) % 7
                if rel in ("الماضي", "المنصرم") and delta == 0:
                    delta = 7
                weekday_iso = _iso(published - timedelta(days=delta))
        spans.append(m.span())
        out.append((m.start(), {"text": shown(*m.span()), "date": weekday_iso, "calendar": "gregorian",
                                "precision": "day", "weekday": _WEEKDAY_NAMES[weekday]}))
    out.sort(key=lambda x: x[0])
    return [e for _, e in out]
