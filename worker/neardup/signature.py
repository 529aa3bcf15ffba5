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

import itertools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter

import numpy as np
import xxhash

from worker.tokens import ANCHOR, FACTS, NUMBER, PUNCT

FORMAT_VERSION = 1
BODY_HASHES = 64  # MinHash values of the body
LEDE_HASHES = 4  # MinHash values of the lede
LEDE_WORDS = 24
SHINGLE = 3  # words per body shingle
MIN_INFORMATIVE = 8  # below this many shingles with an anchor word, every shingle counts
MAX_TITLE_WORDS = 16
ANCHOR_SKETCH = 24  # bottom-k size of the anchor sketch
MAX_PARAGRAPHS = 40
BAND_MINIMA = 24  # 32-bit minima kept for single-row LSH bands
MAX_NUMBERS = 12  # the story's first distinct numbers: a daily market report differs in these
SHARD_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_U64 = np.uint64
_rng = np.random.default_rng(0x616B68626172)  # fixed: signatures must be identical everywhere
_BODY_A = _rng.integers(1, 2**63, BODY_HASHES, dtype=np.uint64) * _U64(2) + _U64(1)
_BODY_B = _rng.integers(0, 2**63, BODY_HASHES, dtype=np.uint64)
_SHINGLE_MUL = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)

# Words that open a dateline or close an agency tag rather than say anything.
_IGNORED_TITLE_WORDS = frozenset({"عاجل", "بالصور", "بالفيديو", "فيديو", "محدث", "رسميا", "شاهد"})

_FLAG_BODY8 = 1
_HEADER = struct.Struct("<BBIH6sHHHBBBBBB")


_FIRST = itemgetter(0)


def _token_hash(token: str) -> int:
    """:func:`worker.tokens.flagged_hash` of ``token``, memoized."""
    return FACTS.one(token)[0]


def _hash_words(tokens: list[str]) -> np.ndarray:
    """The flagged hash of every token (see :func:`worker.tokens.flagged_hash`): words are looked up
    once per process, in the memo the keywords share, so the signature needs no per-word Python
    work beyond that lookup."""
    return np.array(list(map(_FIRST, FACTS.many(tokens))), dtype=np.uint64)


def _word_hashes(paragraphs: list[list[str]]) -> tuple[np.ndarray, list[int]]:
    """Hashes of the words (punctuation left out) of split paragraphs, and each paragraph's count."""
    flagged = _hash_words(list(itertools.chain.from_iterable(paragraphs)))
    is_word = (flagged & _U64(PUNCT)) == 0
    if len(paragraphs) == 1:
        return flagged[is_word], [int(np.count_nonzero(is_word))]
    # Words per paragraph from one cumulative sum (a numpy call per paragraph costs more).
    ends = np.cumsum([len(tokens) for tokens in paragraphs])
    running = np.concatenate(([0], np.cumsum(is_word)))
    counts = (running[ends] - running[np.concatenate(([0], ends[:-1]))]).tolist()
    return flagged[is_word], counts


def words(match_text: str) -> list[str]:
    """Word tokens of a match form: punctuation tokens dropped, so punctuation edits change nothing."""
    return [w for w in match_text.split() if w.isalnum()]


def _dateline_words(match_body: str) -> int:
    """Words of a leading dateline ("الرياض - واس :"): those before a colon among the first ten tokens."""
    head = match_body[:200].split()[:10]
    if ":" in head:
        return sum(1 for w in head[: head.index(":")] if w.isalnum())
    return 0


def _shingle_hashes(hashes: np.ndarray, k: int) -> np.ndarray:
    """Hashes of the word k-grams, in text order (repeats kept: they change no minimum)."""
    if len(hashes) < k:
        return hashes if len(hashes) else np.zeros(1, dtype=np.uint64)
    acc = hashes[: len(hashes) - k + 1] * _SHINGLE_MUL[0]
    for j in range(1, k):
        acc = acc ^ (hashes[j : len(hashes) - k + 1 + j] * _SHINGLE_MUL[j])
    return acc


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for a small 1-D array, without its fixed cost (a third of the time here)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _fold16(mins: np.ndarray) -> np.ndarray:
    """32-bit MinHash minima folded to 16 bits (collisions 1 in 65,536: a negligible bias)."""
    return ((mins * _U64(0x9E3779B1)) >> _U64(16)).astype(np.uint16)


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
    n_anchors: int = 0  # distinct anchor words (the sketch keeps the smallest ANCHOR_SKETCH hashes)
    # BAND_MINIMA body minima at full 32 bits, over the informative shingles: the LSH band keys.
    # Kept in the database copy (rebuild needs them), not in Redis, where the bands are the index.
    minima: bytes = b""
    body_bits: int = 16  # 8 in a Redis record (see to_bytes)

    def to_bytes(self, *, record: bool = False) -> bytes:
        """The storage form: a fixed header, then the vectors.

        ``record=True`` gives the smaller form Redis keeps: no band minima (the bands are the index)
        and the body MinHash cut to 8 bits a value (b-bit MinHash: 64 bytes instead of 128, the
        chance agreement of 1/256 is taken out again by :func:`worker.neardup.compare.features`).
        """
        kept = b"" if record else self.minima
        body = self.body
        flags = 0
        if record or self.body_bits == 8:
            body = np.frombuffer(self.body, dtype=self.body_dtype()).astype(np.uint8).tobytes()
            flags |= _FLAG_BODY8
        head = _HEADER.pack(
            FORMAT_VERSION,
            flags,
            self.published_minute,
            self.source_hash,
            self.digest,
            min(self.n_words, 0xFFFF),
            min(self.n_shingles, 0xFFFF),
            min(self.n_anchors, 0xFFFF),
            len(body) if flags & _FLAG_BODY8 else len(body) // 2,
            len(self.lede) // 2,
            len(self.title) // 2,
            len(self.anchors) // 2,
            len(self.numbers) // 2,
            len(kept) // 4,
        )
        return b"".join(
            (
                head,
                bytes([len(self.paragraph_words)]),
                body,
                self.lede,
                self.title,
                self.anchors,
                self.paragraphs,
                self.paragraph_words,
                self.numbers,
                kept,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Inverse of :meth:`to_bytes`."""
        (
            version,
            flags,
            minute,
            source_hash,
            digest,
            n_words,
            n_shingles,
            n_anchors,
            nb,
            nl,
            nt,
            na,
            nn,
            nm,
        ) = _HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown signature format {version}")
        pos = _HEADER.size
        npar = data[pos]
        pos += 1
        parts = []
        body_bytes = 1 if flags & _FLAG_BODY8 else 2
        for size in (body_bytes * nb, 2 * nl, 2 * nt, 2 * na, 4 * npar, npar, 2 * nn, 4 * nm):
            parts.append(bytes(data[pos : pos + size]))
            pos += size
        body, lede, title, anchors, paragraphs, paragraph_words, numbers, minima = parts
        return cls(
            published_minute=minute,
            source_hash=source_hash,
            digest=digest,
            n_words=n_words,
            n_shingles=n_shingles,
            body=body,
            lede=lede,
            title=title,
            anchors=anchors,
            paragraphs=paragraphs,
            paragraph_words=paragraph_words,
            numbers=numbers,
            n_anchors=n_anchors,
            minima=minima,
            body_bits=8 * body_bytes,
        )

    # Decoded views, for comparison.
    def body_dtype(self) -> str:
        return "<u2" if self.body_bits == 16 else "u1"

    def body_array(self) -> np.ndarray:
        return np.frombuffer(self.body, dtype=self.body_dtype())

    def lede_array(self) -> np.ndarray:
        return np.frombuffer(self.lede, dtype="<u2")

    def band_keys(self, rows: int, bands: int, lede_bands: int) -> list[int]:
        """32-bit LSH band keys: ``bands`` body bands of ``rows`` values each, then lede bands of 2."""
        keys = []
        if rows == 1:
            if len(self.minima) < 4 * bands:
                raise ValueError("this signature keeps too few 32-bit minima for single-row bands")
            keys = [
                xxhash.xxh32_intdigest(self.minima[4 * band : 4 * band + 4], seed=band)
                for band in range(bands)
            ]
        else:
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
    lines = match_body.split("\n")
    if paragraphs_match is None or paragraphs_match == lines:
        # The usual case: the paragraphs are the body's lines, so one pass hashes both.
        hashes, counts = _word_hashes([line.split() for line in lines])
        para_hashes_all = hashes
    else:
        hashes, _ = _word_hashes([match_body.split()])
        para_hashes_all, counts = _word_hashes([text.split() for text in paragraphs_match])

    # One matrix of permuted shingle hashes serves the body MinHash (all rows) and the lede MinHash
    # (the rows of the lede's shingles, first LEDE_HASHES permutations).
    shingles = _shingle_hashes(hashes, SHINGLE)
    permuted = np.multiply.outer(shingles, _BODY_A)  # in place from here: no temporaries
    permuted += _BODY_B
    # A permutation's value is the high 32 bits; the minimum of those is the high 32 bits of the
    # minimum (the shift keeps order), so only the minima are shifted, not the whole matrix.
    mins = permuted.min(axis=0) >> _U64(32)
    body = _fold16(mins)
    skip = min(_dateline_words(match_body), max(0, len(shingles) - 1))
    lede = _fold16(permuted[skip : skip + LEDE_WORDS - SHINGLE + 1, :LEDE_HASHES].min(axis=0) >> _U64(32))
    # The band keys (the candidates' source) leave out shingles of common words only ("في الوقت
    # الذي"): in most stories, as minima they would make every story a candidate of every other
    # and say nothing of this one. All shingles count when too few others remain.
    band_rows = permuted[:, :BAND_MINIMA]
    if len(hashes) >= SHINGLE:
        anchor = (hashes & _U64(ANCHOR)) != 0
        n = len(shingles)
        informative = anchor[:n] | anchor[1 : n + 1] | anchor[2 : n + 2]
        if np.count_nonzero(informative) >= MIN_INFORMATIVE:
            band_rows = band_rows[informative]
    band_minima = band_rows.min(axis=0) >> _U64(32)

    title_words = [w for w in words(match_title) if w not in _IGNORED_TITLE_WORDS]
    title_hashes = _hash_words(title_words)
    title = sorted({(h >> 16) & 0xFFFF for h in title_hashes.tolist()})[:MAX_TITLE_WORDS]

    every = np.concatenate((title_hashes, hashes))
    all_anchors = _sorted_unique((every[(every & _U64(ANCHOR)) != 0] >> _U64(20)) & _U64(0xFFFF))
    anchors = all_anchors[:ANCHOR_SKETCH]
    # The first MAX_NUMBERS distinct numbers in text order (a handful: plain Python is cheapest).
    first = list(dict.fromkeys(every[(every & _U64(NUMBER)) != 0].tolist()))[:MAX_NUMBERS]
    numbers = sorted({(value >> 36) & 0xFFFF for value in first})

    # One SimHash per paragraph, all paragraphs at once: a word's 32 bits vote +1/-1, summed per
    # paragraph with reduceat (a numpy call per paragraph would cost more than the whole signature).
    kept = [i for i, n in enumerate(counts) if n][:MAX_PARAGRAPHS]
    para_words = [min(counts[i], 255) for i in kept]
    para_hashes = b""
    if kept:
        ph = para_hashes_all
        if len(kept) < sum(1 for n in counts if n):  # more paragraphs than kept: only theirs
            offsets = np.cumsum([0, *counts])
            ph = np.concatenate([para_hashes_all[offsets[i] : offsets[i + 1]] for i in kept])
        lengths = np.array([counts[i] for i in kept])
        bits = np.unpackbits((ph >> _U64(32)).astype("<u4").view(np.uint8), bitorder="little")
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        votes = np.add.reduceat(bits.reshape(-1, 32), starts, axis=0, dtype=np.int32)
        # Bit j of a paragraph's hash is set when most of its words have bit j set.
        majority = votes * 2 > lengths[:, None]
        para_hashes = np.packbits(majority, axis=1, bitorder="little").tobytes()  # uint32 LE each

    digest = xxhash.xxh3_64_digest(match_title.encode("utf-8") + b"\x1f" + match_body.encode("utf-8"))[:6]
    return Signature(
        published_minute=minute_of(published_at),
        source_hash=xxhash.xxh32_intdigest(source.encode("utf-8")) & 0xFFFF,
        digest=digest,
        n_words=len(hashes),
        n_shingles=len(shingles),
        body=body.astype("<u2").tobytes(),
        lede=lede.astype("<u2").tobytes(),
        title=np.array(title, dtype="<u2").tobytes(),
        anchors=anchors.astype("<u2").tobytes(),
        paragraphs=para_hashes,
        paragraph_words=bytes(para_words),
        numbers=np.array(numbers, dtype="<u2").tobytes(),
        n_anchors=len(all_anchors),
        minima=band_minima.astype("<u4").tobytes(),
    )
