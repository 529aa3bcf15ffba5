"""Enrichment of one story, offline: language, dateline, agencies, places, dates, keywords, kind.

``enrich(...)`` is a plain function (no Celery, no database). It reads the match forms computed
by the normalize stage and returns a JSON-serializable dict with these keys, always present:

``version``
    :data:`ENRICHMENT_VERSION`, bumped whenever the output for a given story can change.
``language``, ``arabic_share``
    ISO 639-1 code from py3langid (its model ships in the wheel), the producer's hint when the
    detector is unsure, None for a story without letters; the share (0..1) of Arabic letters
    among all letters of headline and body.
``dateline``
    ``{"place", "place_ar", "country_code", "date", "agency", "text"}`` or None: the place
    (canonical English name, None when the gazetteer does not know it), the place as written,
    the ISO date when the dateline carries one, the canonical agency, the head text as written.
``agencies``
    ``[{"name", "mentions"}]``: wire agencies named anywhere, canonical names (Reuters, AFP, AP,
    dpa, Anadolu, SPA, WAM, QNA, KUNA, MENA, SANA, Petra, Xinhua, IRNA, BNA, ONA, Saba, ...),
    most mentioned first.
``places``
    ``[{"name", "name_ar", "kind", "country_code", "lat", "lon", "mentions"}]``: countries and
    cities, ``kind`` is "country" or "city"; a country's coordinates are its capital's.
``dates``
    ``[{"text", "date", "calendar", "precision", ...}]`` in text order: ``date`` is ISO
    ("2015-07-22", or "2015-07" for a month) or None when the year cannot be known; Hijri
    entries add ``"hijri"`` (the Hijri date); weekday entries add ``"weekday"`` and are resolved
    against ``published_at``.
``keywords``
    ``[{"term", "count", "score"}]``: top terms of the match form (see
    :func:`worker.enrichment.text.keywords` for the method).
``kind``
    ``{"urgent", "correction", "update"}`` booleans from labels in the headline or the body's head.
``counts``
    ``{"words", "paragraphs", "reading_minutes"}``.
``title_bw``
    the headline in Buckwalter transliteration, or None.

The gazetteer and automaton are built on first use (about a second) and cached for the process;
:func:`warm` builds them ahead of the first story.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.enrichment.dateline import find_dateline
from worker.enrichment.dates import find_dates
from worker.enrichment.gazetteer import load
from worker.enrichment.places import find
from worker.enrichment.text import (
    counts,
    identifier,
    keywords,
    language,
    story_kind,
    title_buckwalter,
    token_counts,
)

ENRICHMENT_VERSION = "2026.11.1"

__all__ = ["ENRICHMENT_VERSION", "enrich", "warm"]


def warm() -> None:
    """Build the gazetteer and load the language model now rather than on the first story."""
    load()
    identifier()


def enrich(*, title: str | None, body: str, paragraphs: list[str], match_title: str, match_body: str,
           published_at: datetime | None = None, language_hint: str | None = None) -> dict[str, Any]:
    """JSON-serializable enrichment of one story."""
    lang, share = language(title, body, language_hint)
    counted = token_counts(match_title, match_body)
    found = find(match_title, match_body, counted.terms)
    first_paragraph = next((p for p in paragraphs if p.strip()), "")
    first_line = match_body.split("\n", 1)[0] if match_body else ""
    return {
        "version": ENRICHMENT_VERSION,
        "language": lang,
        "arabic_share": share,
        "dateline": find_dateline(first_paragraph, published_at) if first_paragraph else None,
        "agencies": found.agencies,
        "places": found.places,
        "dates": find_dates(f"{match_title}\n{match_body}", published_at,
                            line_tokens=[counted.title, *counted.lines]),
        "keywords": keywords(match_title, match_body, counted),
        "kind": story_kind(match_title, first_line),
        "counts": counts(match_body, paragraphs, counted),
        "title_bw": title_buckwalter(title),
    }
