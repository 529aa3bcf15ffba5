"""The match form at speed: CAMeL Tools' normalization chain compiled into a few string passes.

:func:`worker.stages.normalize.match_form_reference` runs CAMeL Tools' functions one after the
other: ``normalize_unicode`` (NFKC), the ``arclean`` :class:`CharMapper` (a Python loop over every
character), ``dediac_ar``, the alef / alef maksura / teh marbuta folds, ``simple_word_tokenize``
(a regex match attempted at every character) and ``lower``. Everything after NFKC is either a
per-character map or a split around single punctuation / symbol characters, so the chain can be
compiled into:

1. NFKC (after CAMeL's own fix map, for the few characters it lists), only when
   ``unicodedata.is_normalized`` says the text is not already NFKC: its quick check costs about a
   nanosecond per character, and in the corpus about one text in sixteen needs NFKC at all,
   three in four of those for an NBSP;
2. one regex that deletes every character ``arclean`` does not list (its default is deletion);
3. one ``str.translate`` applying ``arclean``, ``dediac_ar``, the three folds and ``lower`` at once,
   and putting spaces around punctuation and symbol characters (a table value may be several
   characters), then a whitespace split / join: what re-joining ``simple_word_tokenize``'s tokens
   with spaces amounts to. (A regex substitution with a template per symbol cost a quarter of the
   function: a template expansion per match.)

Steps 2 and 3 are done on bytes when the text fits the Windows Arabic code page (cp1256), as 98.5%
of the corpus's titles and paragraphs do: one ``bytes.translate`` with a 256-byte table and a
``bytes.replace`` per symbol present instead of a dict lookup per character, half the time of the
whole function (the corpus's titles and paragraphs: 1.6 s instead of 3.2 s).

The tables are built at import from CAMeL Tools' own character map and functions, which stay the
reference: each table entry is CAMeL's own output for that character, and the symbol set is what
``simple_word_tokenize`` itself splits off. The assumptions that make the compilation exact are
checked at import (a CAMeL Tools upgrade that breaks one fails loudly instead of drifting).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from camel_tools.tokenizers.word import simple_word_tokenize
from camel_tools.utils import normalize as camel_normalize
from camel_tools.utils.charmap import CharMapper
from camel_tools.utils.dediac import dediac_ar
from camel_tools.utils.normalize import (
    normalize_alef_ar,
    normalize_alef_maksura_ar,
    normalize_teh_marbuta_ar,
    normalize_unicode,
)

__all__ = [
    "MATCH_ALPHABET",
    "SYMBOLS",
    "TOKEN_ALPHABET",
    "arclean_fast",
    "match_form_fast",
    "normalize_unicode_fast",
]


def char_class(chars: Iterable[str]) -> str:
    """A regex character class body listing ``chars`` as ranges of consecutive code points."""
    points = sorted({ord(c) for c in chars})
    parts: list[str] = []
    start = prev = points[0]
    for point in [*points[1:], -1]:
        if point == prev + 1:
            prev = point
            continue
        parts.append(
            re.escape(chr(start)) if start == prev else f"{re.escape(chr(start))}-{re.escape(chr(prev))}"
        )
        start = prev = point
    return "".join(parts)


def _fold(text: str) -> str:
    """The per-character steps that follow ``arclean`` in the reference, in the same order."""
    return normalize_teh_marbuta_ar(normalize_alef_maksura_ar(normalize_alef_ar(dediac_ar(text))))


def _token_class(char: str) -> str:
    """How ``simple_word_tokenize`` treats one character: "space", "symbol" or "word"."""
    tokens = simple_word_tokenize(f"a{char}a")
    if tokens == ["a", "a"]:
        return "space"
    if tokens == ["a", char, "a"]:
        return "symbol"
    if tokens == [f"a{char}a"]:
        return "word"
    raise RuntimeError(f"simple_word_tokenize splits {char!r} in an unexpected way: {tokens!r}")


# --- Step 1: NFKC. ``normalize_unicode`` first maps a few characters (the rial sign, the basmala
# ligature) with its own CharMapper, then runs NFKC. Some of them (the basmala) are NFKC-stable, so
# the quick check cannot stand in for looking for them.
_UNICODE_FIX = camel_normalize._UNICODE_CHAR_FIX
if _UNICODE_FIX._default is not None:
    raise RuntimeError("camel_tools' normalize_unicode fix map no longer keeps unlisted characters")
_UNICODE_FIX_CHARS: tuple[str, ...] = tuple(_UNICODE_FIX._charmap)

# --- Steps 2 and 3: arclean and the folds. CharMapper has no public accessor for its expanded map:
# ``_charmap`` (character -> replacement, None meaning "itself") and ``_default`` are exactly what
# its ``map_string`` reads, so they are read here rather than parsing the JSON file a second way.
_ARCLEAN = CharMapper.builtin_mapper("arclean")
if _ARCLEAN._default != "":
    raise RuntimeError("the arclean map no longer deletes unlisted characters")
_ARCLEAN_MAP: dict[str, str] = {
    key: key if value is None else value for key, value in _ARCLEAN._charmap.items()
}

# What reaches the tokenizer in the reference: arclean's output after the folds, before lower().
TOKEN_ALPHABET: frozenset[str] = frozenset("".join(_fold(v) for v in _ARCLEAN_MAP.values()))
_CLASS = {c: _token_class(c) for c in TOKEN_ALPHABET}

# lower() is moved into the table, before tokenizing instead of after. That is exact only if it
# maps each character to one character of the same token class and never looks at context (the
# Greek final sigma is the one case where str.lower does).
for _c in TOKEN_ALPHABET:
    _low = _c.lower()
    if len(_low) != 1 or _c == "\u03a3" or _token_class(_low) != _CLASS[_c]:
        raise RuntimeError(f"lower() of {_c!r} cannot be moved before tokenization")

# simple_word_tokenize can match multi-character emoji sequences, but every one of them needs a
# joiner, a variation selector, a keycap, a tag, a skin-tone modifier or a regional indicator,
# and arclean deletes all of those: after it, every match is one character.
for _c in TOKEN_ALPHABET:
    if re.fullmatch(
        r"[\u200d\ufe0f\u20e3\U000e0020-\U000e007f\U0001f3fb-\U0001f3ff\U0001f1e6-\U0001f1ff]", _c
    ):
        raise RuntimeError(f"arclean keeps {_c!r}, which can join an emoji sequence")

# Characters arclean drops: everything it does not list.
_UNLISTED_RE = re.compile(f"[^{char_class(set(_ARCLEAN_MAP))}]+")

# --- Step 4: the tokenizer splits every symbol / punctuation character off as its own token and
# splits on Python's whitespace; re-joined with single spaces, that is spaces around symbols.
SYMBOLS: frozenset[str] = frozenset(c.lower() for c, kind in _CLASS.items() if kind == "symbol")


def _spaced(text: str) -> str:
    """``text`` with a space on both sides of every symbol character."""
    return "".join(f" {c} " if c in SYMBOLS else c for c in text)


# Steps 3 and 4 in one table: each character's folded, lower-cased form with its symbols already
# spaced out, so a single ``str.translate`` (in C) replaces a regex substitution per symbol.
_TABLE: dict[int, str] = {ord(key): _spaced(_fold(value).lower()) for key, value in _ARCLEAN_MAP.items()}

# Every character a match form can hold, besides the single space between tokens.
MATCH_ALPHABET: frozenset[str] = frozenset(c.lower() for c, kind in _CLASS.items() if kind != "space")


# arclean alone: the listed characters that it changes.
_ARCLEAN_TABLE: dict[int, str] = {ord(key): value for key, value in _ARCLEAN_MAP.items() if value != key}


def normalize_unicode_fast(text: str) -> str:
    """CAMeL Tools' ``normalize_unicode(text)`` (step 1), without NFKC when the text is already NFKC."""
    # Both checks run in C at a few nanoseconds per character or less; the fix map is CAMeL's own
    # code and matters only when one of its few characters is present.
    if any(c in text for c in _UNICODE_FIX_CHARS):
        return normalize_unicode(text)
    if not unicodedata.is_normalized("NFKC", text):
        return unicodedata.normalize("NFKC", text)
    return text


def arclean_fast(text: str) -> str:
    """CAMeL Tools' ``arclean`` character map applied to ``text`` (its ``map_string``, in C)."""
    return _UNLISTED_RE.sub("", text).translate(_ARCLEAN_TABLE)


# --- Steps 2 to 4 on bytes. ``str.translate`` looks each character up in a dict (an int object and a
# dict lookup per character, most of the function's time), ``bytes.translate`` indexes a 256-byte
# table. Arabic news text almost always fits the Windows Arabic code page, one byte per character:
# such a text is encoded, mapped and deleted with one ``bytes.translate``, its symbols spaced out with
# a ``bytes.replace`` per symbol present, and decoded. A text holding any character the byte tables
# cannot do exactly takes the ``str`` path above.
_CODEPAGE = "cp1256"


def _byte_tables() -> tuple[bytes, bytes, bytes, dict[int, bytes]]:
    """The byte path's tables: the 1:1 map, the bytes it deletes, the bytes it cannot do (the
    ``str`` path's), and the spaced form of each symbol byte."""
    table = bytearray(range(256))
    deleted = bytearray()
    unsafe = bytearray()
    spaced: dict[int, bytes] = {}
    plain_out: set[int] = set()
    for byte in range(256):
        try:
            char = bytes([byte]).decode(_CODEPAGE)
        except UnicodeDecodeError:
            continue  # no character encodes to it
        if _UNLISTED_RE.fullmatch(char):
            deleted.append(byte)  # arclean deletes it (the regex of the str path)
            continue
        out = _TABLE.get(ord(char), char)
        try:
            if out == "":
                deleted.append(byte)
            elif len(out) == 1:
                table[byte] = out.encode(_CODEPAGE)[0]
                plain_out.add(table[byte])
            elif len(out) == 3 and out[0] == out[2] == " " and out[1] in SYMBOLS:
                table[byte] = out[1].encode(_CODEPAGE)[0]
                spaced[table[byte]] = out.encode(_CODEPAGE)
            else:
                unsafe.append(byte)
        except UnicodeEncodeError:
            unsafe.append(byte)
    # A byte that is a spaced symbol's output and also some character's plain output would be
    # spaced where the str path leaves it: characters mapped to it take the str path.
    for byte in range(256):
        if table[byte] in spaced and table[byte] in plain_out and byte not in deleted:
            unsafe.append(byte)
    return bytes(table), bytes(deleted), bytes(unsafe), spaced


_BYTE_TABLE, _BYTE_DELETED, _BYTE_UNSAFE, _BYTE_SPACED = _byte_tables()
# Everything but the symbols' bytes, for finding which symbols a mapped text holds.
_NOT_SYMBOL_BYTES = bytes(b for b in range(256) if b not in _BYTE_SPACED)
# Every byte the byte path can do (for finding a text that holds another one).
_SAFE_BYTES = bytes(b for b in range(256) if b not in set(_BYTE_UNSAFE))


def _match_form_str(text: str) -> str:
    return " ".join(_UNLISTED_RE.sub("", text).translate(_TABLE).split())


def match_form_fast(text: str) -> str:
    """The match form of ``text``: identical to ``match_form_reference``, several times faster."""
    text = normalize_unicode_fast(text)
    try:
        raw = text.encode(_CODEPAGE)
    except UnicodeEncodeError:
        return _match_form_str(text)
    if raw.translate(None, _SAFE_BYTES):
        return _match_form_str(text)
    mapped = raw.translate(_BYTE_TABLE, _BYTE_DELETED)
    for byte in set(mapped.translate(None, _NOT_SYMBOL_BYTES)):
        mapped = mapped.replace(bytes([byte]), _BYTE_SPACED[byte])
    return " ".join(mapped.decode(_CODEPAGE).split())
