"""Stage 1, normalize: the *match form* of a story, used for keys and deduplication.

The original title and body are never modified; the match form is derived from them with CAMeL
Tools' data-free normalizers, in this order:

1. ``normalize_unicode`` (NFKC: presentation forms and ligatures to their letters),
2. the ``arclean`` character map (Arabic-Indic and Persian digits to ASCII, tatweel, bidi and
   zero-width marks, NBSP and other spaces, control characters),
3. ``dediac_ar`` (harakat, shadda, sukun, dagger alef),
4. alef, alef maksura and teh marbuta folding (أ إ آ ٱ -> ا, ى -> ي, ة -> ه),
5. ``simple_word_tokenize`` re-joined with single spaces (punctuation split from words, all runs
   of whitespace collapsed), then Latin letters case-folded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from camel_tools.tokenizers.word import simple_word_tokenize
from camel_tools.utils.charmap import CharMapper
from camel_tools.utils.dediac import dediac_ar
from camel_tools.utils.normalize import (
    normalize_alef_ar,
    normalize_alef_maksura_ar,
    normalize_teh_marbuta_ar,
    normalize_unicode,
)

from producers.records import split_paragraphs

_ARCLEAN = CharMapper.builtin_mapper("arclean")


def match_form_reference(text: str) -> str:
    """The match form computed with CAMeL Tools' own functions, step by step."""
    text = normalize_unicode(text)
    text = _ARCLEAN(text)
    text = dediac_ar(text)
    text = normalize_alef_ar(text)
    text = normalize_alef_maksura_ar(text)
    text = normalize_teh_marbuta_ar(text)
    return " ".join(simple_word_tokenize(text)).lower()


from worker.stages.normalize_fast import match_form_fast as match_form  # noqa: E402  (equal to the above)


def content_hash(match_title: str, match_body: str) -> str:
    """The exact-duplicate key: SHA-256 over the match forms of title and body."""
    digest = hashlib.sha256()
    digest.update(match_title.encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(match_body.encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Normalized:
    """What the normalize stage produces for one delivery."""

    paragraphs: list[str]
    match_title: str
    match_body: str
    content_hash: str


def normalize(*, title: str | None, body: str, format: str = "json") -> Normalized:
    """Split paragraphs and compute the match forms and content hash of one story."""
    paragraphs = split_paragraphs(body, format)
    match_title = match_form(title or "")
    match_body = "\n".join(m for m in (match_form(p) for p in paragraphs) if m)
    return Normalized(paragraphs=paragraphs, match_title=match_title, match_body=match_body,
                      content_hash=content_hash(match_title, match_body))
