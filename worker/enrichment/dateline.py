"""The dateline: the place, date and source at the head of a wire story.

Shapes found in Arabic wire copy and papers, all read from the first paragraph's head:

* ``دبي (رويترز) -`` and ``واشنطن، 9 يونيو (رويترز) -``
* ``القاهرة - أ ش أ``, ``الرياض - واس``, ``واس - عدن:``
* ``سبق- جدة:``, ``هادي آل كليب- سبق- نجران:``, ``عين اليوم – صنعاء``
* ``دبي: «الخليج»``, ``الشارقة: عايدة عبد الحميد``, ``رأس الخيمة عدنان عكاشة:``

The head is cut at the first colon, at the dash after an agency, or is the whole first line when
that line is short. It is split into segments at dashes, brackets, quotes and commas; a segment
that is (or starts with) a known place gives the place, one that is an agency gives the agency;
outlet and reporter names are skipped. A place unknown to the gazetteer is kept as written when
an agency vouches for the segment ("الداير - واس").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from camel_tools.tokenizers.word import simple_word_tokenize
from camel_tools.utils.dediac import dediac_ar

from worker.enrichment.dates import find_dates
from worker.enrichment.gazetteer import Gazetteer, Place, load
from worker.stages.normalize import match_form
from worker.stages.normalize_fast import arclean_fast, normalize_unicode_fast

_SEPARATORS = {"-", "–", "—", "ـ", "(", ")", "«", "»", '"', "“", "”", "،", ",", "/", "|", "'", "‹", "›"}
_HEAD_MAX_TOKENS = 12
_SHORT_LINE = 7
_RAW_HEAD_CHARS = 240


def display_tokens(raw: str) -> list[str]:
    """Tokens of the text as written, minus diacritics and tatweel, aligned with the match form.

    CAMeL Tools' ``normalize_unicode`` and ``arclean`` in their exact fast forms (see
    :mod:`worker.stages.normalize_fast`), then its ``dediac_ar`` and ``simple_word_tokenize``.
    """
    return simple_word_tokenize(dediac_ar(arclean_fast(normalize_unicode_fast(raw))))


def _head(tokens: list[str], gz: Gazetteer) -> int:
    """How many leading tokens form the dateline head (0 when there is none)."""
    limit = min(len(tokens), _HEAD_MAX_TOKENS + 1)
    for i in range(limit):
        if tokens[i] == ":":
            return i if i <= _HEAD_MAX_TOKENS else 0
    for i in range(min(len(tokens), _HEAD_MAX_TOKENS)):
        if tokens[i] == ")" and i + 1 < len(tokens) and tokens[i + 1] in {"-", "–", "—"}:
            return i + 2
    if len(tokens) <= _SHORT_LINE and (len(tokens) <= 2 or any(t in _SEPARATORS for t in tokens)):
        return len(tokens)
    # "القاهرة - أ ش أ تستضيف ...": the head ends with the agency named after a dash.
    for n in range(min(len(tokens), _HEAD_MAX_TOKENS), 0, -1):
        for k in (3, 2, 1):
            if n - k < 1:
                continue
            cand = " ".join(tokens[n - k:n])
            if tokens[n - k - 1] in {"-", "–", "—"} and any(
                    e.category in ("agency", "agency_weak") for e in gz.forms.get(cand, ())):
                return n
    return 0


def _segments(tokens: list[str]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for i, tok in enumerate([*tokens, "-"]):
        if tok in _SEPARATORS or tok == ":":
            if i > start:
                out.append((start, i))
            start = i + 1
    return out


def _place_prefix(gz: Gazetteer, words: list[str]) -> tuple[int, Place | None]:
    """The longest leading run of words that names a place (the bare name, no proclitic)."""
    for k in range(min(4, len(words)), 0, -1):
        form = " ".join(words[:k])
        places = gz.places_by_form.get(form)
        if places and k < len(words) and (form in gz.strict_cue_required or form in gz.cue_required):
            continue  # "بدر الجبل": a name that is also a town, followed by more of the name
        if places:
            city = next((p for p in places if p.kind == "city"), None)
            return k, city or places[0]
        if k == 1 and form in gz.dateline_only:
            return 1, gz.dateline_only[form]
    return 0, None


def _agency(gz: Gazetteer, words: list[str]) -> str | None:
    form = " ".join(words)
    for entry in gz.forms.get(form, ()):
        if entry.category in ("agency", "agency_weak") and not entry.proclitic:
            return entry.agency
    return None


def find_dateline(first_paragraph: str, published_at: datetime | None) -> dict[str, Any] | None:
    """The dateline of a story from its first paragraph, or None."""
    gz = load()
    raw = first_paragraph.lstrip()[:_RAW_HEAD_CHARS]
    folded = match_form(raw).split()
    if len(raw) == _RAW_HEAD_CHARS and len(folded) > 1:
        folded = folded[:-1]  # the cut may have split the last word
    n = _head(folded, gz)
    if n == 0:
        return None
    shown = display_tokens(raw)[:len(folded)]
    if len(shown) != len(folded):
        shown = folded  # alignment lost (rare characters): report the match form
    head = folded[:n]
    place: Place | None = None
    place_ar: str | None = None
    agency: str | None = None
    date_iso: str | None = None
    unknown: tuple[int, int] | None = None
    last_unknown: tuple[int, int] | None = None
    outlet_at: int | None = None
    place_at = 0
    n_head = n - 1 if head and head[-1] == ":" else n
    for start, end in _segments(head):
        words = head[start:end]
        found_agency = _agency(gz, words)
        if found_agency:
            agency = agency or found_agency
            continue
        if place is None:
            k, candidate = _place_prefix(gz, words)
            if candidate is not None:
                place, place_ar, place_at = candidate, " ".join(shown[start:start + k]), start
                continue
        if " ".join(words) in gz.outlet_names:
            outlet_at = start if outlet_at is None else outlet_at
            continue  # "سبق", "عين اليوم", «الخليج»: the outlet signing the story
        if date_iso is None and place is not None:
            found = find_dates(" ".join(words), published_at)
            if found:
                date_iso = found[0].get("date")
                continue
        if end - start <= 3:
            unknown = unknown or (start, end)
            last_unknown = (start, end)
    if place is not None and place.kind == "country" and unknown is not None and unknown[0] < place_at:
        # "أتلانتا، أمريكا": city, country. The city is unknown to the gazetteer; the dateline
        # keeps it as written with the country's code.
        place_ar = " ".join(shown[unknown[0]:unknown[1]])
        return {"place": None, "place_ar": place_ar, "country_code": place.country_code,
                "date": date_iso, "agency": agency,
                "text": " ".join(t for t in shown[:n] if t != ":").strip(" -–—")}
    if place is None and agency and unknown is not None:
        place_ar = " ".join(shown[unknown[0]:unknown[1]])
    elif place is None and outlet_at is not None and last_unknown is not None and \
            last_unknown[0] > outlet_at and last_unknown[1] == n_head:
        # "سبق-الجوف:": the segment after the signing outlet, closing the head, is the place
        # even when the gazetteer does not know it (a region, a village).
        place_ar = " ".join(shown[last_unknown[0]:last_unknown[1]])
    if place is None and place_ar is None and agency is None:
        return None
    text = " ".join(t for t in shown[:n] if t != ":").strip(" -–—")
    return {"place": place.name if place else None, "place_ar": place_ar,
            "country_code": place.country_code if place else None, "date": date_iso,
            "agency": agency, "text": text}
