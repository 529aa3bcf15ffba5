"""Places and agencies in a story: one automaton pass, then context rules on each hit.

The haystack is the match form of the headline and of each paragraph, one line each, with a
space on both sides of every token, so every indexed form `` name `` matches whole tokens only.
Overlapping hits are resolved leftmost-longest ("دير الزور" over "الزور", "الإمارات العربية
المتحدة" over "الإمارات", "واشنطن بوست" swallowing "واشنطن").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from worker.enrichment.gazetteer import Entry, Gazetteer, Place, load

_OPEN = {"(", "«", '"', "“", "'", "[", "‹", "”"}
_CLOSE = {")", "»", '"', "”", "'", "]", "›", "“"}
_NUMBER_ADJ_ENDINGS = ("يا",)
_SA_ADJ = "السعوديه"
_SY_INDEF = "سوريه"
_VERB_ENDINGS = ("وا",)
_SENTENCE_EDGE = _OPEN | {"", "،", ",", ".", "#"}
_DASHES = {"-", "–", "—"}
_DATELINE_EDGE = {"", "-", "–", "—", ":", "،", ",", "(", ")", "«", "»", '"', "/"}
_CLUB_NATIONALITY = {"الايطالي", "الاسباني", "الانجليزي", "الانكليزي", "الفرنسي", "الالماني",
                     "البرتغالي", "الهولندي", "السويسري", "التركي", "السعودي", "الاماراتي"}
# A nisba adjective follows a definite noun ("الهيئة السعودية"); weekday and time words are not
# such nouns ("ثم الثلاثاء السعودية وقطر": on Tuesday, Saudi Arabia and Qatar).
_TIME_WORDS = {"الاحد", "الاثنين", "الثلاثاء", "الاربعاء", "الخميس", "الجمعه", "السبت", "اليوم", "الان"}
# The dateline region: the first tokens of the story's first paragraph.
DATELINE_TOKENS = 14


@dataclass(slots=True)
class Hit:
    """One selected automaton hit: where it is and what it may mean."""

    start: int
    end: int
    surface: str
    entries: tuple[Entry, ...]
    line: int
    token_index: int
    prev: str = ""
    prev2: str = ""
    next: str = ""


@dataclass(slots=True)
class Found:
    """Everything the place pass produced for one story."""

    places: list[dict[str, Any]] = field(default_factory=list)
    agencies: list[dict[str, Any]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)


def haystack(match_title: str, match_body: str) -> tuple[str, list[int]]:
    """The searchable text and the offset where each line (title = line 0) starts."""
    lines = [match_title, *match_body.split("\n")] if match_body else [match_title]
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    for line in lines:
        starts.append(pos)
        chunk = f" {line} \n"
        parts.append(chunk)
        pos += len(chunk)
    return "".join(parts), starts


def _select(gz: Gazetteer, hay: str) -> list[tuple[int, int, str]]:
    """Leftmost-longest, non-overlapping hits as (start, end, surface) over token spans."""
    # The pattern is " surface "; its inner span ends one before the trailing space. Sorted by
    # start, longest first: two hits with the same span are the same pattern, so the tuples'
    # own order is the order of (start, -length).
    raw = sorted([(end - length, -length, end, surface)
                  for end, (length, surface) in gz.automaton.iter(hay)])
    chosen: list[tuple[int, int, str]] = []
    last_end = -1
    for start, _, end, surface in raw:
        if start >= last_end:
            chosen.append((start, end, surface))
            last_end = end
    return chosen


def _context(hay: str, start: int, end: int) -> tuple[str, str, str]:
    """The two tokens before a hit and the token after it, on the same line."""
    line_start = hay.rfind("\n", 0, start) + 1
    # Only the last two tokens before the hit and the first after it are needed: split no more.
    before = hay[line_start:start].rsplit(None, 2)
    line_end = hay.find("\n", end)
    after = hay[end:line_end if line_end >= 0 else len(hay)].split(None, 1)
    prev = before[-1] if before else ""
    prev2 = before[-2] if len(before) > 1 else ""
    return prev, prev2, (after[0] if after else "")


def collect_hits(gz: Gazetteer, match_title: str, match_body: str) -> list[Hit]:
    """All selected hits of the story, with their line and context tokens."""
    hay, starts = haystack(match_title, match_body)
    hits: list[Hit] = []
    line = 0
    for start, end, surface in _select(gz, hay):
        while line + 1 < len(starts) and starts[line + 1] <= start:
            line += 1
        prev, prev2, nxt = _context(hay, start, end)
        token_index = hay.count(" ", starts[line], start) - 1
        hits.append(Hit(start, end, surface, gz.forms[surface], line, token_index, prev, prev2, nxt))
    return hits


def in_dateline(hit: Hit) -> bool:
    """Whether the hit sits in the head of the first body paragraph."""
    return hit.line == 1 and hit.token_index < DATELINE_TOKENS


def _bracketed(hit: Hit) -> bool:
    return hit.prev in _OPEN and hit.next in _CLOSE


def _place_allowed(gz: Gazetteer, hit: Hit, entry: Entry, sports: bool) -> bool:
    """Context rules for one place reading; True keeps the mention."""
    base, proclitic, prev = entry.base, entry.proclitic, hit.prev
    cue = prev in gz.city_cues or prev in gz.prepositions
    # In the dateline a place stands alone between separators; "بدر الجبل- سبق- تبوك:" starts
    # with a reporter's first name, not with the town of Badr.
    dateline = in_dateline(hit) and prev in _DATELINE_EDGE and hit.next in _DATELINE_EDGE
    rejected = (
        # «الرياض» between quotes is the newspaper.
        (base in gz.outlet_names and _bracketed(hit))
        # "الهيئة السعودية" is an adjective; the country is "السعودية" after a preposition, a
        # verb, a time word, or in "المملكة العربية السعودية" (matched as a whole).
        or (base == _SA_ADJ and not proclitic
            and ((prev.startswith("ال") and prev not in _TIME_WORDS) or prev == "العربيه"))
        # "الأمريكية والسعودية": two adjectives.
        or (base == _SA_ADJ and proclitic == "و" and prev.startswith("ال") and prev.endswith("يه"))
        # "مصادر سورية" is "Syrian sources"; "في سورية" and "دخلوا سورية" are the country.
        or (base == _SY_INDEF and not proclitic and not cue
            and not prev.endswith(_VERB_ENDINGS) and prev not in _SENTENCE_EDGE)
        # "12 سوريا قتلوا": twelve Syrians.
        or (not proclitic and base.endswith(_NUMBER_ADJ_ENDINGS) and prev.isdigit())
        or (base in gz.country_cue_required and not (proclitic or prev in gz.prepositions))
        or (base in gz.strict_cue_required and not (prev in gz.city_cues or dateline))
        or (base in gz.cue_required and not (cue or proclitic == "ب" or dateline))
        # In a sports story a club's city name is the club, unless a place word precedes it;
        # "ميلان الإيطالي" is the club in any story.
        or (base in gz.club_names and not proclitic and hit.next in _CLUB_NATIONALITY)
        or (sports and base in gz.club_names
            and not (prev in gz.city_cues or prev == "في" or proclitic == "ب" or dateline))
    )
    return not rejected


def _resolve(gz: Gazetteer, places: tuple[Place, ...], base: str, hit: Hit,
             support: Counter[str], words: Collection[str]) -> Place:
    """Pick one reading of an ambiguous name from the story's other places and cue words."""
    if len(places) == 1:
        return places[0]
    if hit.prev in {"سلطنه"}:
        return next((p for p in places if p.kind == "country"), places[0])
    if hit.prev in {"امانه", "امين", "العاصمه", "بالعاصمه", "مدينه", "بمدينه"} or hit.next == "العاصمه":
        return next((p for p in places if p.kind == "city"), places[0])
    scores: dict[str, float] = {}
    for place in places:
        cc = place.country_code
        score = float(support.get(cc, 0))
        score += sum(1 for w in gz.country_cues.get(cc, ()) if w in words)
        scores[place.key] = score
    best = max(places, key=lambda p: (scores[p.key], p.country_code == gz.ambiguous_default.get(base),
                                      p.population))
    return best


def find(match_title: str, match_body: str, tokens: Collection[str] | None = None) -> Found:
    """Places and agencies of one story.

    ``tokens`` holds the story's tokens (headline and body) when the caller has them already.
    """
    gz = load()
    hits = collect_hits(gz, match_title, match_body)
    if tokens is None:
        tokens = set((match_title + " " + match_body).split())
    sports = sum(1 for w in gz.sports_words if w in tokens) >= 2
    support: Counter[str] = Counter()
    kept: list[tuple[Hit, Entry]] = []
    agencies: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    last_agency: tuple[str, int] = ("", -1)
    last_end = -10
    for hit in hits:
        entries = hit.entries
        if any(e.category == "block" for e in entries):
            continue
        place_entries = [e for e in entries if e.category == "place"]
        agency_entries = [e for e in entries if e.category in ("agency", "agency_weak")]
        if place_entries and _place_allowed(gz, hit, place_entries[0], sports):
            if agency_entries and hit.prev not in gz.city_cues:
                pass  # "قنا" alone is the agency QNA, the city Qena needs a cue
            else:
                kept.append((hit, place_entries[0]))
                if len(place_entries[0].places) == 1:
                    support[place_entries[0].places[0].country_code] += 1
                continue
        for entry in agency_entries:
            if entry.category == "agency" or (not entry.proclitic and (
                    _bracketed(hit) or hit.prev in _DASHES or hit.next in _DASHES | {":"})):
                # "وكالة الأنباء الألمانية (د.ب.أ)": the abbreviation right after the name is
                # the same attribution, not a second one.
                if last_agency == (entry.agency, hit.line) and hit.start - last_end <= 4:
                    last_end = hit.end
                    break
                agencies[entry.agency] += 1
                first_seen.setdefault(entry.agency, hit.start)
                last_agency, last_end = (entry.agency, hit.line), hit.end
                break
    counts: Counter[str] = Counter()
    chosen: dict[str, Place] = {}
    order: dict[str, int] = {}
    for hit, entry in kept:
        place = _resolve(gz, entry.places, entry.base, hit, support, tokens)
        counts[place.key] += 1
        chosen[place.key] = place
        order.setdefault(place.key, hit.start)
    places = [dict(chosen[k].as_dict(), mentions=counts[k])
              for k in sorted(counts, key=lambda k: (-counts[k], order[k]))]
    agency_list = [{"name": a, "mentions": n}
                   for a, n in sorted(agencies.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))]
    return Found(places=places, agencies=agency_list, hits=hits)
