"""The match form: the fast normalizer equals CAMeL Tools' chain, and the properties both must keep.

Equality is shown on every Unicode code point, on every pair of characters that can reach the
tokenizer, and on hypothesis-generated text mixing the characters real Arabic feeds carry (harakat,
tatweel, alef variants, Arabic-Indic and Persian digits, NBSP, zero-width and bidi marks,
presentation forms, emoji sequences) with arbitrary Unicode. Corpus-wide equality is in
``test_normalize_corpus.py``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.records import build_delivery, split_paragraphs
from worker.messages import Delivery
from worker.stages.normalize import content_hash, match_form, match_form_reference, normalize
from worker.stages.normalize_fast import MATCH_ALPHABET, SYMBOLS, TOKEN_ALPHABET, match_form_fast

# Matching is by value: no test here may depend on how long anything takes on a shared machine.
PROPERTY = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
EQUALITY = settings(deadline=None, max_examples=1500, suppress_health_check=[HealthCheck.too_slow])

BOTH: list[Callable[[str], str]] = [match_form_reference, match_form_fast]

# Base Arabic letters that no step of the chain rewrites (no alef variants, no alef maksura,
# no teh marbuta, no tatweel), plus the plain alef the variants fold to.
PLAIN_LETTERS = (
    [chr(c) for c in range(0x0628, 0x063B) if chr(c) != "\u0629"]
    + [chr(c) for c in range(0x0641, 0x064B) if chr(c) != "\u0649"]
    + ["\u0627", "\u0621"]
)
HARAKAT = [chr(c) for c in range(0x064B, 0x0653)] + ["\u0670"]  # dediac_ar's set
TATWEEL = "\u0640"
ALEF_VARIANTS = ["\u0623", "\u0625", "\u0622", "\u0671"]  # أ إ آ ٱ
ARABIC_INDIC = [chr(0x0660 + d) for d in range(10)]
PERSIAN = [chr(0x06F0 + d) for d in range(10)]
# Spaces that arclean and NFKC turn into a plain space: NBSP, narrow NBSP, ideographic space, ...
SPACE_LIKE = ["\u00a0", "\u202f", "\u2007", "\u3000", "\u2009"]
# Marks that arclean deletes outright: bidi isolates and invisible operators, valid anywhere.
DELETED_MARKS = ["\u2066", "\u2067", "\u2068", "\u2069", "\u2061", "\u2062", "\u2063", "\u061c"]
# Zero-width and bidi marks that arclean turns into a space: neutral next to a word boundary only
# (inside a word, CAMeL Tools splits the word there).
SPACING_MARKS = list("\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u202a\u202b\u202c\u202d\u202e")
PUNCTUATION = list("،؛؟«».,!?:;-()[]\"'/%*…–—“”‘’٪٫٬")
LATIN = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZÀÉÎÖÜßàéîöüÿ")
EXTRAS = [
    # the rial sign, the basmala and Allah ligatures: CAMeL's fix map and NFKC
    *"\ufdfc\ufdfd\ufdf2",
    # presentation forms (NFKC) and combining hamza / madda (NFKC composes them with a letter)
    *"\ufe8d\ufe8e\ufefb\ufef7\ufb56\ufeef\u0654\u0655\u0653",
    # whitespace and control characters
    *"\t\n\r\x0b\x0c\x1f\x85\x02\x00",
    # emoji sequences (joiners, keycaps, skin tones, flags) and symbols
    *["👍🏽", "1️⃣", "#️⃣", "🇸🇦", "👨\u200d👩\u200d👧", "©", "®", "™", "\u2424", "¶", "×", "÷"],
    # Arabic-Indic digits, Persian digits and letters, Kurdish letters that arclean maps
    *["٠١", "۴۵۶", "ی", "ک", "ە", "ۀ"],
]
ARABIC_RANGE = [chr(c) for c in range(0x0600, 0x0700)]

FEED_CHARS = st.sampled_from(
    PLAIN_LETTERS
    + HARAKAT
    + [TATWEEL]
    + ALEF_VARIANTS
    + ["\u0649", "\u0629"]
    + ARABIC_INDIC
    + PERSIAN
    + SPACE_LIKE
    + DELETED_MARKS
    + SPACING_MARKS
    + PUNCTUATION
    + LATIN
    + EXTRAS
    + ARABIC_RANGE
    + [" ", " ", " ", "0", "7"]
)
# Feed-like characters most of the time, arbitrary Unicode (all planes, no surrogates) otherwise.
FEED_TEXT = st.lists(st.one_of(FEED_CHARS, FEED_CHARS, FEED_CHARS, st.characters()), max_size=120).map(
    "".join
)


def test_pipeline_uses_the_fast_match_form() -> None:
    assert match_form is match_form_fast


def test_every_code_point_alone_matches_the_reference() -> None:
    # Separated by spaces, each code point (lone surrogates included) goes through NFKC, arclean
    # and the tokenizer on its own. The NFKC-stable ones are kept apart so that the text they form
    # takes the path that skips NFKC, the others the path that runs it.
    points = [chr(c) for c in range(0x110000)]
    stable = [c for c in points if unicodedata.is_normalized("NFKC", c)]
    unstable = [c for c in points if not unicodedata.is_normalized("NFKC", c)]
    for group in (stable, unstable):
        text = " ".join(group)
        if match_form_fast(text) != match_form_reference(text):
            bad = [c for c in group if match_form_reference(c) != match_form_fast(c)][:10]
            pytest.fail(f"code points that differ: {[hex(ord(c)) for c in bad]}")
    assert unicodedata.is_normalized("NFKC", " ".join(stable)) and len(unstable) > 1000
    # The rial sign and the basmala ligature go through CAMeL's own fix map, not plain NFKC.
    assert "بسم الله الرحمن الرحيم" in match_form_fast(" ".join(stable))
    assert "ريال" in match_form_fast(" ".join(unstable))


def test_every_code_point_in_context_matches_the_reference() -> None:
    # Unseparated: combining marks now compose with (or attach to) their neighbours under NFKC.
    text = "".join(chr(c) for c in range(0x110000))
    assert match_form_fast(text) == match_form_reference(text)


def test_every_pair_of_tokenizer_characters_matches_the_reference() -> None:
    # Everything arclean can output, next to everything else: the tokenizer is the one step that
    # looks at neighbours, and pairs are what a multi-character match would need.
    chars = sorted(TOKEN_ALPHABET | MATCH_ALPHABET | {" ", "\n", "a", "ا"})
    bad = [(a, b) for a in chars for b in chars if match_form_fast(a + b) != match_form_reference(a + b)]
    assert bad == []
    assert len(chars) ** 2 > 30_000


def test_every_code_page_character_matches_the_reference() -> None:
    # The byte path (one byte per character of the Windows Arabic code page): each character alone,
    # between letters, and next to every other one, and the characters it leaves to the str path.
    from worker.stages import normalize_fast

    chars = [c for c in (bytes([b]).decode("cp1256", "ignore") for b in range(256)) if c]
    assert len(chars) > 250
    for c in chars:
        for text in (c, f"a{c}b", f"ب{c}ا", f" {c}{c} "):
            assert match_form_fast(text) == match_form_reference(text), text
    bad = [(a, b) for a in chars for b in chars if match_form_fast(a + b) != match_form_reference(a + b)]
    assert bad == []
    text = "".join(chars)
    assert match_form_fast(text) == match_form_reference(text)
    assert len(normalize_fast._BYTE_UNSAFE) < 10 and len(normalize_fast._BYTE_SPACED) > 20


def test_alphabets_are_what_the_reference_produces() -> None:
    # The symbol set is exactly what CAMeL splits off, Arabic punctuation mapped to ASCII by arclean.
    assert set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") <= SYMBOLS
    assert not {"،", "؛", "؟", "«", "»"} & MATCH_ALPHABET
    assert {"ا", "ي", "ه", "0", "9", "a", "z"} <= MATCH_ALPHABET
    assert not {"أ", "إ", "آ", "ٱ", "ى", "ة", "ـ", "A", "Z", "\u00a0"} & MATCH_ALPHABET
    assert not set(HARAKAT) & MATCH_ALPHABET and not set(ARABIC_INDIC + PERSIAN) & MATCH_ALPHABET


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("أَحْمَدُ إلى المَدْرَسَةِ", "احمد الي المدرسه"),
        ("عـــاجـــل: ٢٠١٩ و۲۰۱۹", "عاجل : 2019 و2019"),
        ("قال\u00a0«رويترز»،\u200fأمس", 'قال " رويترز " , امس'),
        ("Reuters, U.S.A!", "reuters , u . s . a !"),
        ("\ufdfc 5", "ريال 5"),
        ("  \t\r\n ", ""),
    ],
)
def test_known_match_forms(text: str, expected: str) -> None:
    assert match_form_reference(text) == expected
    assert match_form_fast(text) == expected


@EQUALITY
@given(FEED_TEXT)
def test_fast_equals_reference_on_generated_text(text: str) -> None:
    assert match_form_fast(text) == match_form_reference(text)


@EQUALITY
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_fast_equals_reference_on_arbitrary_unicode(text: str) -> None:
    assert match_form_fast(text) == match_form_reference(text)


@pytest.mark.parametrize("form", BOTH, ids=["reference", "fast"])
@PROPERTY
@given(text=FEED_TEXT)
def test_match_form_is_idempotent_and_canonical(form: Callable[[str], str], text: str) -> None:
    once = form(text)
    assert form(once) == once
    # One space between tokens, none at the ends, nothing outside the match alphabet.
    assert once == " ".join(once.split(" ")) and "  " not in once and once == once.strip()
    assert set(once) <= MATCH_ALPHABET | {" "}


# --- Feed noise maps to the same match form as the plain text ---------------------------------

WORD = st.lists(st.sampled_from(PLAIN_LETTERS), min_size=1, max_size=8).map("".join)
NUMBER = st.integers(min_value=0, max_value=10**9).map(str)
PLAIN_TEXT = st.lists(
    st.one_of(WORD, WORD, WORD, NUMBER, st.sampled_from(["،", "«", "»", ".", ":"])), min_size=1, max_size=30
)


@st.composite
def plain_and_noisy(draw: st.DrawFn) -> tuple[str, str]:
    """A plain Arabic text and the same text with the noise wire copy carries added."""
    tokens = draw(PLAIN_TEXT)
    plain_parts: list[str] = []
    noisy_parts: list[str] = []
    for token in tokens:
        noisy = []
        for ch in token:
            if ch.isdigit():
                ch_noisy = draw(st.sampled_from([ch, ARABIC_INDIC[int(ch)], PERSIAN[int(ch)]]))
            elif ch == "\u0627":
                ch_noisy = draw(st.sampled_from(["\u0627", *ALEF_VARIANTS]))
            else:
                ch_noisy = ch
            noisy.append(ch_noisy)
            if ch in PLAIN_LETTERS:
                # Harakat (up to two, e.g. shadda + fatha), tatweel and deleted marks after a letter.
                noisy.extend(draw(st.lists(st.sampled_from([*HARAKAT, TATWEEL, *DELETED_MARKS]), max_size=3)))
        plain_parts.append(token)
        noisy_parts.append("".join(noisy))
    plain = " ".join(plain_parts)
    marks = st.lists(st.sampled_from(SPACING_MARKS + DELETED_MARKS), max_size=2).map("".join)
    separators = [
        draw(marks) + draw(st.sampled_from([" ", *SPACE_LIKE])) + draw(marks) for _ in noisy_parts[1:]
    ]
    noisy_text = noisy_parts[0] + "".join(
        sep + part for sep, part in zip(separators, noisy_parts[1:], strict=True)
    )
    return plain, draw(marks) + noisy_text + draw(marks)


@pytest.mark.parametrize("form", BOTH, ids=["reference", "fast"])
@PROPERTY
@given(pair=plain_and_noisy())
def test_feed_noise_does_not_change_the_match_form(form: Callable[[str], str], pair: tuple[str, str]) -> None:
    plain, noisy = pair
    assert form(noisy) == form(plain)


@pytest.mark.parametrize("form", BOTH, ids=["reference", "fast"])
def test_each_kind_of_noise_folds_to_the_plain_word(form: Callable[[str], str]) -> None:
    plain = form("احمد في المدرسه 2019")
    for noisy in [
        "أَحْمَدُ فِي الْمَدْرَسَهِ 2019",  # harakat
        "احـــمد فـي المـدرسـه 2019",  # tatweel
        "أحمد في إلمدرسه 2019",  # alef variants
        "احمد في المدرسه ٢٠١٩",  # Arabic-Indic digits
        "احمد في المدرسه ۲۰۱۹",  # Persian digits
        "احمد\u00a0في\u00a0المدرسه\u202f2019",  # NBSP and narrow NBSP
        "\u200fاحمد \u200bفي\u200c المدرسه\u2066 2019\u2069\ufeff",  # zero-width and bidi marks
    ]:
        assert form(noisy) == plain, noisy


def test_real_changes_do_change_the_match_form() -> None:
    base = match_form("احمد في المدرسه 2019")
    for changed in [
        "احمد في المدرسه 2018",
        "محمد في المدرسه 2019",
        "احمد فيالمدرسه 2019",
        "احمد في المدرسة الكبيرة 2019",
    ]:
        assert match_form(changed) != base, changed


# --- normalize() derives, never rewrites ------------------------------------------------------

# What the input contract lets through to normalize(): no lone surrogates (rejected as such).
CONTRACT_TEXT = FEED_TEXT.filter(lambda text: not any("\ud800" <= c <= "\udfff" for c in text))

BODY_LINES = (
    st.lists(CONTRACT_TEXT, min_size=1, max_size=6)
    .map(lambda lines: "\n".join(lines))
    .filter(lambda body: body.strip() != "")
)


@PROPERTY
@given(
    title=st.one_of(st.none(), CONTRACT_TEXT), body=BODY_LINES, fmt=st.sampled_from(["json", "seed", "rss"])
)
def test_normalize_keeps_the_delivery_and_its_paragraphs(title: str | None, body: str, fmt: str) -> None:
    record = build_delivery(
        {"id": "n-1", "title": title, "body": body, "source": "wire"},
        default_source="wire",
        raw=b"{}",
        format=fmt,
    )
    assert isinstance(record, Delivery)
    before = record.model_dump()
    body_digest = hashlib.sha256(record.body.encode("utf-8", "surrogatepass")).hexdigest()

    result = normalize(title=record.title, body=record.body, format=record.format)

    assert record.model_dump() == before
    assert hashlib.sha256(record.body.encode("utf-8", "surrogatepass")).hexdigest() == body_digest
    # The paragraphs are the original text, split, not the match form.
    assert result.paragraphs == split_paragraphs(body, fmt)
    assert all(p in body for p in result.paragraphs)
    assert result.match_title == match_form_reference(title or "")
    assert result.match_body == "\n".join(
        m for m in (match_form_reference(p) for p in result.paragraphs) if m
    )
    assert result.content_hash == content_hash(result.match_title, result.match_body)


@PROPERTY
@given(pair=plain_and_noisy(), title=WORD)
def test_content_hash_ignores_noise(pair: tuple[str, str], title: str) -> None:
    plain, noisy = pair
    assert normalize(title=title, body=noisy).content_hash == normalize(title=title, body=plain).content_hash


def test_content_hash_keeps_title_and_body_apart() -> None:
    assert content_hash("ab", "c") != content_hash("a", "bc")
    assert normalize(title="خبر", body="نص").content_hash != normalize(title="خبر نص", body="").content_hash


def test_arclean_and_normalize_unicode_fast_forms_match_camel_tools() -> None:
    # Every code point, separated and unseparated: what the dateline's display tokens rely on.
    from camel_tools.utils.charmap import CharMapper
    from camel_tools.utils.normalize import normalize_unicode

    from worker.stages.normalize_fast import arclean_fast, normalize_unicode_fast

    arclean = CharMapper.builtin_mapper("arclean")
    points = [chr(c) for c in range(0x110000)]
    for text in (" ".join(points), "".join(points), "ﷲ ﷽ ﷼ بسم الله", "خبر\u00a0عاجل ١٢٣"):
        unicode_form = normalize_unicode(text)
        assert normalize_unicode_fast(text) == unicode_form
        assert arclean_fast(unicode_form) == arclean(unicode_form)
