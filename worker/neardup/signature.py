"""The near-duplicate signature of a story: what is stored, in Redis and in the database, per story.

A signature holds, in about 200 to 300 bytes:

* a MinHash of the body's word 3-grams (:data:`BODY_HASHES` 16-bit values): text similarity, and the
  LSH band keys the index looks candidates up by;
* a MinHash of the *lede* (the first words of the body after any dateline): a one-line flash and the
  full story that follows it share their lede and little else;
* the title's words and a bottom-k sketch of the story's *anchors* (numbers and every word that is
  not one of the 500 commonest news words: names, places, organisations): what tells two stories
  written from one template apart (royal cables to different heads of state, daily market reports);
* per paragraph a 32-bit SimHash and a word count: which paragraphs were added or removed;
* the story's first numbers: two daily market or weather reports share their wording, not these;
* the publication minute, a hash of the source and a digest of the match form.

Everything is computed from the *match form* (see :mod:`worker.stages.normalize`), so diacritic,
alef, tatweel and digit variants never change a signature. Hashes are xxHash (stable across
processes and machines, unlike Python's ``hash``); the MinHash permutations are multiply-shift hashes
with fixed seeds, computed with numpy.

Written here rather than taken from datasketch because datasketch stores 128 64-bit values per
story (1 KB before any Redis overhead) and has no notion of anchors, ledes or paragraphs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources

import numpy as np
import xxhash

FORMAT_VERSION = 1
BODY_HASHES = 64  # MinHash values of the body
LEDE_HASHES = 4  # MinHash values of the lede
LEDE_WORDS = 24
SHINGLE = 3  # words per body shingle
MAX_TITLE_WORDS = 16
ANCHOR_SKETCH = 24  # bottom-k size of the anchor sketch
MAX_PARAGRAPHS = 40
MAX_NUMBERS = 12  # the story's first distinct numbers: a daily market report differs in these
SHARD_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_U64 = np.uint64
_rng = np.random.default_rng(0x616B68626172)  # fixed: signatures must be identical everywhere
_BODY_A = _rng.integers(1, 2**63, BODY_HASHES, dtype=np.uint64) * _U64(2) + _U64(1)
_BODY_B = _rng.integers(0, 2**63, BODY_HASHES, dtype=np.uint64)
_LEDE_A = _rng.integers(1, 2**63, LEDE_HASHES, dtype=np.uint64) * _U64(2) + _U64(1)
_LEDE_B = _rng.integers(0, 2**63, LEDE_HASHES, dtype=np.uint64)
_SHINGLE_MUL = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)
_BITS32 = np.uint64(1) << np.arange(32, dtype=np.uint64)

# Words that open a dateline or close an agency tag rather than say anything.
_IGNORED_TITLE_WORDS = frozenset({"عاجل", "بالصور", "بالفيديو", "فيديو", "محدث", "رسميا", "شاهد"})

_HEADER = struct.Struct("<BBIH6sHHBBBBB")


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The words that never count as anchors (see common_words.txt)."""
    text = resources.files(__package__).joinpath("common_words.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


_token_cache: dict[str, int] = {}


def _token_hash(token: str) -> int:
    # A bounded per-process cache: news vocabulary repeats, and hashing dominates signature time.
    value = _token_cache.get(token)
    if value is None:
        value = xxhash.xxh3_64_intdigest(token.encode("utf-8"))
        if len(_token_cache) > 500_000:
            _token_cache.clear()
        _token_cache[token] = value
    return value


def words(match_text: str) -> list[str]:
    """Word tokens of a match form: punctuation tokens dropped, so punctuation edits change nothing."""
    return [w for w in match_text.split() if w.isalnum()]


def _strip_dateline(tokens: list[str], raw_tokens: list[str]) -> list[str]:
    """Drop a leading dateline ("الرياض - واس :"): tokens before a colon among the first eight."""
    head = raw_tokens[:10]
    if ":" in head:
        cut = head.index(":")
        skipped = sum(1 for w in raw_tokens[:cut] if w.isalnum())
        return tokens[skipped:]
    return tokens


def _shingle_hashes(hashes: np.ndarray, k: int) -> np.ndarray:
    if len(hashes) < k:
        return hashes if len(hashes) else np.zeros(1, dtype=np.uint64)
    acc = hashes[: len(hashes) - k + 1] * _SHINGLE_MUL[0]
    for j in range(1, k):
        acc = acc ^ (hashes[j : len(hashes) - k + 1 + j] * _SHINGLE_MUL[j])
    return np.unique(acc)


def _minhash16(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash with multiply-shift permutations; each 32-bit minimum is folded to 16 bits."""
    mins = ((shingles[:, None] * a[None, :] + b[None, :]) >> _U64(32)).min(axis=0)
    return ((mins * _U64(0x9E3779B1)) >> _U64(16)).astype(np.uint16)


def _u16(values: list[int]) -> list[int]:
    return [v & 0xFFFF for v in values]


def minute_of(at: datetime | None) -> int:
    """Minutes since 2000-01-01 UTC (0 when unknown): the signature's clock."""
    if at is None:
        return 0
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(1, int((at - SHARD_EPOCH).total_seconds() // 60))


@dataclass(frozen=True, slots=True)
class Signature:
    """A story's compact near-duplicate signature (see the module docstring).

    Vectors are little-endian byte strings so that a signature is hashable, comparable and packs
    without copying; :meth:`to_bytes` / :meth:`from_bytes` are the storage format.
    """

    published_minute: int
    source_hash: int
    digest: bytes  # 6 bytes of xxh3 over the match form: equal digests = exact duplicate
    n_words: int
    n_shingles: int
    body: bytes  # BODY_HASHES x uint16
    lede: bytes  # LEDE_HASHES x uint16
    title: bytes  # sorted unique uint16 hashes of title words
    anchors: bytes  # bottom-k uint16 hashes of anchor words, ascending
    paragraphs: bytes  # uint32 SimHash per paragraph
    paragraph_words: bytes  # uint8 word count per paragraph (capped at 255)
    numbers: bytes = b""  # sorted uint16 hashes of the first distinct numbers of the story

    def to_bytes(self) -> bytes:
        """The storage form: a fixed header, then the vectors."""
        head = _HEADER.pack(
            FORMAT_VERSION,
            0,
            self.published_minute,
            self.source_hash,
            self.digest,
            min(self.n_words, 0xFFFF),
            min(self.n_shingles, 0xFFFF),
            len(self.body) // 2,
            len(self.lede) // 2,
            len(self.title) // 2,
            len(self.anchors) // 2,
            len(self.numbers) // 2,
        )
        return b"".join(
            (
                head,
                bytes([len(self.paragraph_words)]),
                self.body,
                self.lede,
                self.title,
                self.anchors,
                self.paragraphs,
                self.paragraph_words,
                self.numbers,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Inverse of :meth:`to_bytes`."""
        (version, _flags, minute, source_hash, digest, n_words, n_shingles, nb, nl, nt, na, nn) = (
            _HEADER.unpack_from(data)
        )
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown signature format {version}")
        pos = _HEADER.size
        npar = data[pos]
        pos += 1
        parts = []
        for size in (2 * nb, 2 * nl, 2 * nt, 2 * na, 4 * npar, npar, 2 * nn):
            parts.append(bytes(data[pos : pos + size]))
            pos += size
        return cls(minute, source_hash, digest, n_words, n_shingles, *parts)

    # Decoded views, for comparison.
    def body_array(self) -> np.ndarray:
        return np.frombuffer(self.body, dtype="<u2")

    def lede_array(self) -> np.ndarray:
        return np.frombuffer(self.lede, dtype="<u2")

    def band_keys(self, rows: int, bands: int, lede_bands: int) -> list[int]:
        """32-bit LSH band keys: ``bands`` body bands of ``rows`` values each, then lede bands of 2."""
        keys = []
        body = self.body
        for band in range(bands):
            chunk = body[2 * band * rows : 2 * (band + 1) * rows]
            keys.append(xxhash.xxh32_intdigest(chunk, seed=band))
        lede = self.lede
        for band in range(lede_bands):
            chunk = lede[4 * band : 4 * band + 4]
            if chunk:
                keys.append(xxhash.xxh32_intdigest(chunk, seed=1000 + band))
        return keys


def signature(
    *,
    match_title: str,
    match_body: str,
    paragraphs_match: list[str] | None = None,
    published_at: datetime | None,
    source: str,
) -> Signature:
    """The signature of one story from its match forms (see :func:`worker.stages.normalize.normalize`).

    ``paragraphs_match`` defaults to the lines of ``match_body`` (the normalize stage joins the match
    forms of the paragraphs with newlines).
    """
    if paragraphs_match is None:
        paragraphs_match = [p for p in match_body.split("\n") if p.strip()]
    raw_tokens = match_body.split()
    tokens = [w for w in raw_tokens if w.isalnum()]
    hashes = np.fromiter((_token_hash(w) for w in tokens), dtype=np.uint64, count=len(tokens))

    shingles = _shingle_hashes(hashes, SHINGLE)
    body = _minhash16(shingles, _BODY_A, _BODY_B)

    lede_tokens = _strip_dateline(tokens, raw_tokens)[:LEDE_WORDS]
    lede_hashes = np.fromiter((_token_hash(w) for w in lede_tokens), dtype=np.uint64, count=len(lede_tokens))
    lede = _minhash16(_shingle_hashes(lede_hashes, 2), _LEDE_A, _LEDE_B)

    title_words = [w for w in words(match_title) if w not in _IGNORED_TITLE_WORDS]
    title = sorted({_token_hash(w) & 0xFFFF for w in title_words})[:MAX_TITLE_WORDS]

    common = common_words()
    anchor_words = {
        w for w in title_words + tokens if w not in common and (len(w) >= 3 or any(c.isdigit() for c in w))
    }
    anchors = sorted({(_token_hash(w) >> 20) & 0xFFFF for w in anchor_words})[:ANCHOR_SKETCH]
    first_numbers: dict[str, None] = {}
    for w in title_words + tokens:
        if w.isdigit() and len(w) >= 2 and len(first_numbers) < MAX_NUMBERS:
            first_numbers[w] = None
    numbers = sorted({(_token_hash(w) >> 36) & 0xFFFF for w in first_numbers})

    # One SimHash per paragraph, all paragraphs at once: a word's 32 bits vote +1/-1, summed per
    # paragraph with reduceat (a numpy call per paragraph would cost more than the whole signature).
    para_tokens = [words(text) for text in paragraphs_match[:MAX_PARAGRAPHS]]
    para_tokens = [p for p in para_tokens if p]
    para_words = [min(len(p), 255) for p in para_tokens]
    para_hashes: list[int] = []
    if para_tokens:
        total = sum(len(p) for p in para_tokens)
        if total == len(tokens):
            ph = hashes  # the paragraphs are the body's lines: their words are hashed already
        else:
            flat = [w for p in para_tokens for w in p]
            ph = np.fromiter((_token_hash(w) for w in flat), dtype=np.uint64, count=len(flat))
        votes = ((ph[:, None] & _BITS32[None, :]) != 0).astype(np.int32)
        starts = np.cumsum([0] + [len(p) for p in para_tokens[:-1]])
        sums = np.add.reduceat(votes, starts, axis=0) * 2 > np.array([len(p) for p in para_tokens])[:, None]
        para_hashes = (sums.astype(np.uint64) * _BITS32[None, :]).sum(axis=1).tolist()

    digest = xxhash.xxh3_64_digest(match_title.encode("utf-8") + b"\x1f" + match_body.encode("utf-8"))[:6]
    return Signature(
        published_minute=minute_of(published_at),
        source_hash=xxhash.xxh32_intdigest(source.encode("utf-8")) & 0xFFFF,
        digest=digest,
        n_words=len(tokens),
        n_shingles=len(shingles),
        body=body.astype("<u2").tobytes(),
        lede=lede.astype("<u2").tobytes(),
        title=np.array(title, dtype="<u2").tobytes(),
        anchors=np.array(anchors, dtype="<u2").tobytes(),
        paragraphs=np.array(para_hashes, dtype="<u4").tobytes(),
        paragraph_words=bytes(para_words),
        numbers=np.array(numbers, dtype="<u2").tobytes(),
    )
