"""What the stages look up per match-form token, in one memo: its flagged hash and its keyword term.

The near-duplicate signature hashes every token of a story (:func:`flagged_hash`) and the keywords
count every distinct one under its term (:func:`term`). Both run on the same story, one after the
other, in the same process; one memo holding both values (:data:`FACTS`, see worker/memo.py) looks
each token up in one dictionary instead of two, computes a new token's two values together, and
keeps each token's string once. On the corpus (keywords then signature of each story, 8,000
stories of warm-up, then 8,000; three alternated runs): 397–416 µs a story against 441–525 with a
memo each, and 10 MB less peak memory; end to end, two worker processes ended 20,000 deliveries at
275–280 MB of RSS against 284–290 (80 against 89–91 MB unique).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import xxhash

from worker.memo import TokenMemo

# --- the signature's flagged hash ----------------------------------------------------------------

ANCHOR = 1  # flag bits kept in the three lowest bits of a token's hash
NUMBER = 2
PUNCT = 4


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The words that never count as anchors (see worker/neardup/common_words.txt)."""
    text = resources.files("worker.neardup").joinpath("common_words.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def flagged_hash(token: str) -> int:
    """A token's xxh3, with its three lowest bits replaced by flags: anchor word, number, punctuation."""
    value = xxhash.xxh3_64_intdigest(token.encode("utf-8")) & ~7
    if not token.isalnum():
        value |= PUNCT
    elif token not in common_words() and (len(token) >= 3 or not token.isalpha()):
        value |= ANCHOR
    if token.isdigit() and len(token) >= 2:
        value |= NUMBER
    return value


# --- the keywords' term ---------------------------------------------------------------------------

ARABIC_WORD = re.compile(r"^[\u0621-\u064a]+$")
LATIN_WORD = re.compile(r"^[a-z][a-z0-9\-]+$")
CLITIC_ARTICLE = ("وبال", "وال", "بال", "فال", "كال", "ولل", "لل", "ال")
# The first of CLITIC_ARTICLE (in its order) that the token starts with and that leaves at least
# three characters: a regex alternation tries its branches in order, the lookahead asks for the
# three characters.
_CLITIC_RE = re.compile(f"(?:{'|'.join(CLITIC_ARTICLE)})(?=.{{3}})", re.DOTALL)


@lru_cache(maxsize=1)
def non_keywords() -> frozenset[str]:
    """Stop words and calendar words: never keywords."""
    # Imported here: the enrichment package imports this module.
    from worker.enrichment.dates import GREGORIAN, HIJRI, WEEKDAYS
    from worker.enrichment.stopwords import stopword_forms

    calendar = set(GREGORIAN) | set(HIJRI) | set(WEEKDAYS)
    calendar |= {w for k in calendar for w in k.split()}
    return frozenset(stopword_forms() | calendar)


def stem(token: str) -> str:
    """The token without a leading conjunction/preposition + article, for counting only."""
    m = _CLITIC_RE.match(token)
    return token[m.end():] if m else token


def term(token: str) -> str | None:
    """The keyword a token counts for, or None."""
    skip = non_keywords()
    found: str | None = None
    if token not in skip and (ARABIC_WORD.match(token) or LATIN_WORD.match(token)):
        found = stem(token)
        if len(found) < 3 or found in skip or ("ال" + found) in skip:
            found = None
    return found


# --- the memo -------------------------------------------------------------------------------------


def facts(token: str) -> tuple[int, str]:
    """(:func:`flagged_hash`, :func:`term` or "") of one token."""
    return (flagged_hash(token), term(token) or "")


# 50,000 tokens a generation hold a day's vocabulary (bounded: see worker/memo.py).
GENERATION = 50_000
FACTS: TokenMemo[tuple[int, str]] = TokenMemo(facts, GENERATION)
