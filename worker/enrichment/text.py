"""Language, script share, keywords, story kind, counts and the Buckwalter headline."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from camel_tools.utils.charmap import CharMapper
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from worker.enrichment import lexicon
from worker.stages.normalize import match_form
from worker.stages.normalize_fast import char_class
from worker.tokens import FACTS

# py3langid's cost grows with the text (it walks the UTF-8 bytes in Python); the headline and the
# start of the body decide the language of a story as well as the whole of it, at a tenth of a
# millisecond.
LANGID_SAMPLE_CHARS = 280
# Share of Arabic letters above which a text without Persian/Urdu letters is taken as Arabic.
ARABIC_SHORTCUT_SHARE = 0.8
# Below this probability the detector's answer is replaced by the producer's language hint.
LANGID_MIN_CONFIDENCE = 0.6
# Arabic silent reading speed, words per minute (Trauzettel-Klosinski & Dietz, IReST 2012: 138).
READING_WPM = 138
KEYWORD_COUNT = 10

_ARABIC_RANGES = ((0x621, 0x63B), (0x641, 0x64B), (0x671, 0x6D4), (0x6FA, 0x700))
_ARABIC_LETTERS = "".join(chr(c) for r in _ARABIC_RANGES for c in range(*r))
_OTHER_ARABIC_SCRIPT = re.compile(
    "[\u067e\u0686\u0698\u06a9\u06af\u06cc\u06c1\u06be\u06d2\u0679\u0688\u0691\u06ba\u06d5\u06c6\u06b5\u0695]")
# Letters not counted as "other": Arabic letters, harakat and common punctuation, digits and spaces.
_NOT_OTHER = (_ARABIC_LETTERS + "".join(chr(c) for c in range(0x64B, 0x671)) + "\u0640\u060c\u061b\u061f"
              "\u00a0\u200f\u200e«»“”–—…" + "0123456789 \n\r\t.,:;!?()[]{}\"'-/%&*+=_#@<>|\\")


# Which UTF-16 code units are Arabic letters; runs of the other letters are found by a regex.
_IS_ARABIC = np.zeros(0x10000, dtype=bool)
_IS_ARABIC[[ord(c) for c in _ARABIC_LETTERS]] = True
# [^\W\d_] is a letter; adding the excluded characters to the negated class leaves the other letters.
_OTHER_LETTER_RUN = re.compile(f"[^\\W\\d_{char_class(_NOT_OTHER)}]+")
_ANY_LETTER = re.compile(r"[^\W\d_]")
# Which BMP code points _OTHER_LETTER_RUN counts (surrogate code units excluded: a text holding
# one, a character beyond the BMP, is counted by the regex itself).
_BMP = "".join(map(chr, range(0xD800))) + "\ufffd" * 0x800 + "".join(map(chr, range(0xE000, 0x10000)))
_IS_OTHER_LETTER = np.zeros(0x10000, dtype=bool)
_IS_OTHER_LETTER[[m.start() + i for m in _OTHER_LETTER_RUN.finditer(_BMP) for i in range(len(m[0]))]] = True
_IS_OTHER_LETTER[0xD800:0xE000] = False
del _BMP
_BW = CharMapper.builtin_mapper("ar2bw")
# CharMapper.map_string is a Python loop over the characters; its map as a str.translate table gives
# the same string (unlisted characters, and listed ones mapped to None, stay as they are).
if _BW._default is not None or any(len(key) != 1 for key in _BW._charmap):
    raise RuntimeError("camel_tools' ar2bw map is no longer a plain character map")
_BW_TABLE = {ord(key): value for key, value in _BW._charmap.items() if value is not None}


@lru_cache(maxsize=1)
def identifier() -> LanguageIdentifier:
    """py3langid's identifier with normalized probabilities, loaded once."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def arabic_share(text: str) -> float:
    """Share of Arabic letters among all letters of the text (0 when it has no letter)."""
    # Arabic letters counted in numpy on the UTF-16 code units (characters beyond the BMP become
    # surrogates, none of them Arabic): a regex findall built a string per run, a word each.
    units = np.frombuffer(text.encode("utf-16-le", "surrogatepass"), dtype="<u2")
    arabic = int(np.count_nonzero(_IS_ARABIC[units]))
    if len(units) == len(text):  # every character in the BMP: one code unit each
        others = int(np.count_nonzero(_IS_OTHER_LETTER[units]))
    else:
        others = sum(map(len, _OTHER_LETTER_RUN.findall(text)))
    letters = arabic + others
    return round(arabic / letters, 3) if letters else 0.0


def language(title: str | None, body: str, hint: str | None) -> tuple[str | None, float]:
    """ISO 639-1 code and the share of Arabic letters among all letters."""
    text = f"{title or ''}\n{body}"
    share = arabic_share(text)
    if share == 0.0 and not _ANY_LETTER.search(text):
        return (hint, 0.0)
    if share >= ARABIC_SHORTCUT_SHARE and _OTHER_ARABIC_SCRIPT.search(text) is None:
        # Persian, Urdu, Pashto and Kurdish all write letters Arabic does not (ی ک پ چ گ ژ ...);
        # a text in Arabic script with none of them is Arabic, and the classifier is skipped.
        return ("ar", share)
    code, prob = identifier().classify(text[:LANGID_SAMPLE_CHARS])
    if prob < LANGID_MIN_CONFIDENCE and hint:
        code = hint
    return (str(code), share)


_SECOND = itemgetter(1)


def _stems(tokens: Mapping[str, int] | list[str]) -> list[str]:
    """The keyword each of ``tokens`` counts for ("" for none), in their order: one lookup each, in
    the memo the near-duplicate signature shares (worker/tokens.py)."""
    return list(map(_SECOND, FACTS.many(tokens)))


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """A story's match-form tokens counted once, for the keywords and the place rules."""

    lines: list[list[str]]  # the tokens of each line of the body
    terms: Counter[str]  # every token of headline and body, in order of first appearance
    line_df: Counter[str]  # body lines holding each token
    title: list[str]  # the headline's tokens


def token_counts(match_title: str, match_body: str) -> TokenCounts:
    """Count the tokens of a story's match forms (the body split once: its tokens are its lines')."""
    line_tokens = [line.split() for line in match_body.split("\n")]
    tf: Counter[str] = Counter(chain.from_iterable(line_tokens))
    line_df: Counter[str] = Counter(chain.from_iterable(map(set, line_tokens)))
    title_tokens = match_title.split()
    tf.update(title_tokens)
    return TokenCounts(line_tokens, tf, line_df, title_tokens)


def keywords(match_title: str, match_body: str, counted: TokenCounts | None = None) -> list[dict[str, Any]]:
    """The story's top terms on the match form.

    A single-document score in the spirit of YAKE (no corpus statistics, no downloads): a term
    scores its frequency, doubled when it is in the headline, times one plus the share of
    paragraphs it appears in (a subject recurs through a story, a passing mention does not).
    Stop words, calendar words, numbers and words under three letters are left out; "العراق",
    "والعراق" and "بالعراق" count as one term, shown in its most frequent written form.
    ``counted`` is :func:`token_counts` of the same match forms, when the caller has it.
    """
    if counted is None:
        counted = token_counts(match_title, match_body)
    tf, line_df = counted.terms, counted.line_df
    counts: dict[str, int] = {}
    best: dict[str, tuple[int, str]] = {}
    spread: dict[str, int] = {}
    # Subscripts and ``in`` only in this loop (no method calls): it runs once per distinct token.
    for token, n, stem in zip(tf, tf.values(), _stems(tf), strict=True):
        if not stem:
            continue
        if stem in counts:
            counts[stem] += n
            if n > best[stem][0]:
                best[stem] = (n, token)
            # Lines holding any form of the term, approximated by the form on most lines.
            lines = line_df[token]
            if lines > spread[stem]:
                spread[stem] = lines
        else:
            counts[stem] = n
            best[stem] = (n, token)
            spread[stem] = line_df[token]
    in_title = set(_stems(counted.title))
    n_lines = max(1, len(counted.lines))
    # Negated scores: the ten smallest, ties by term, are the keywords. The tenth smallest float
    # bounds them, so only the terms scoring at least that much are sorted as pairs.
    negs = [-(tf_ * (2.0 if stem in in_title else 1.0) * (1.0 + spread[stem] / n_lines))
            for stem, tf_ in counts.items()]
    if len(negs) > KEYWORD_COUNT:
        bound = sorted(negs)[KEYWORD_COUNT - 1]
        scored = sorted([(neg, stem) for neg, stem in zip(negs, counts, strict=True)
                         if neg <= bound])[:KEYWORD_COUNT]
    else:
        scored = sorted(zip(negs, counts, strict=True))
    out: list[dict[str, Any]] = []
    for neg_score, stem in scored:
        score = -neg_score
        if score < 2.0 and out:
            break  # single passing mentions are not keywords
        out.append({"term": best[stem][1], "count": counts[stem], "score": round(score, 3)})
    return out


@lru_cache(maxsize=1)
def _markers() -> dict[str, frozenset[str]]:
    return {kind: frozenset(match_form(m).strip() for m in words)
            for kind, words in lexicon.KIND_MARKERS.items()}


@lru_cache(maxsize=1)
def _any_marker() -> frozenset[str]:
    return frozenset().union(*_markers().values())


@lru_cache(maxsize=1)
def _marker_first() -> frozenset[str]:
    """The first token of every label: an n-gram equal to a label starts with one of them."""
    return frozenset(marker.split()[0] for marker in _any_marker() if marker.split())


_LABEL_EDGE = {":", "-", "–", "|", "(", ")", "[", "]", ".", "..", "...", "«", "»", "*", "،"}


def _ngrams(tokens: list[str]) -> set[str]:
    """Every run of one to three tokens, joined with spaces."""
    out = set(tokens)
    out.update(" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1))
    out.update(" ".join(tokens[i:i + 3]) for i in range(len(tokens) - 2))
    return out


def story_kind(match_title: str, first_line: str) -> dict[str, bool]:
    """Flash, correction and update labels of the headline or the body's first tokens.

    "عاجل" counts anywhere there; a correction or update label only when set off by brackets, a
    colon or a dash ("تصحيح: ...", "(محدث)"), never as an ordinary word ("تحديث نظام المرور" is
    about an update, not one).
    """
    head = first_line.split()[:8]
    texts = (match_title, " ".join(head))
    markers_by_kind = _markers()
    # Most stories carry no label at all: none of their tokens starts a label, which says so
    # without building their n-grams.
    title_tokens = match_title.split()
    first = _marker_first()
    if first.isdisjoint(title_tokens) and first.isdisjoint(head):
        return dict.fromkeys(markers_by_kind, False)
    if _any_marker().isdisjoint(_ngrams(title_tokens) | _ngrams(texts[1].split())):
        return dict.fromkeys(markers_by_kind, False)
    out = {}
    for kind, markers in markers_by_kind.items():
        found = False
        for text in texts:
            tokens = text.split()
            for size in (3, 2, 1):
                for i in range(len(tokens) - size + 1):
                    if " ".join(tokens[i:i + size]) not in markers:
                        continue
                    before = tokens[i - 1] if i else ""
                    after = tokens[i + size] if i + size < len(tokens) else ""
                    if kind == "urgent" or before in _LABEL_EDGE or after in _LABEL_EDGE:
                        found = True
        out[kind] = found
    return out


def counts(match_body: str, paragraphs: list[str], counted: TokenCounts | None = None) -> dict[str, int]:
    """Words (tokens holding a letter or a digit), paragraphs, and reading time in minutes.

    ``counted`` is :func:`token_counts` of the same match forms, when the caller has it.
    """
    tokens = chain.from_iterable(counted.lines) if counted is not None else match_body.split()
    words = sum(map(str.isalnum, tokens))
    minutes = math.ceil(words / READING_WPM) if words else 0
    return {"words": words, "paragraphs": len(paragraphs), "reading_minutes": minutes}


def title_buckwalter(title: str | None) -> str | None:
    """The headline in Buckwalter transliteration (CAMeL Tools' ar2bw map)."""
    if not title or not title.strip():
        return None
    return " ".join(title.split()).translate(_BW_TABLE)
