"""The shared near-duplicate index on the machine's Redis (private key prefix per test)."""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from bench import corpus_variants as cv
from tests.conftest import read_corpus
from tests.neardup.test_compare import sig
from worker.neardup import compare
from worker.neardup.index import (
    IndexLost,
    NearDupIndex,
    RebuildInProgress,
    decode_record,
    decode_ref,
    encode_ref,
)
from worker.neardup.signature import Signature

T0 = datetime(2015, 7, 22, 8, 0, tzinfo=UTC)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def index(client: redis.Redis, redis_prefix: str) -> Iterator[NearDupIndex]:
    idx = NearDupIndex(client, f"{redis_prefix}-{uuid.uuid4().hex[:8]}", expected_stories=1000)
    idx.ensure()
    yield idx
    idx.drop()


@pytest.fixture(scope="module")
def stories() -> list[tuple[str, str]]:
    rows = [r for r in read_corpus(800) if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(cv._paras(r["body"])) >= 3 and len(r["body"].split()) >= 100]
    return [(r["title"], r["body"]) for r in rows[:60]]


def test_refs_pack_small() -> None:
    delivery = str(uuid.uuid4())
    assert len(encode_ref(delivery)) == 17
    assert decode_ref(encode_ref(delivery)) == (delivery, 17)
    assert decode_ref(encode_ref("story-42"))[0] == "story-42"


def test_a_record_returned_again_is_decoded_once(index: NearDupIndex, stories: list[tuple[str, str]]) -> None:
    title, body = stories[1]
    stored = sig(title, body)
    index.add("kept", stored)
    decode_record.cache_clear()
    first = index.candidates(sig(title, body + "\nسطر جديد."))
    again = index.candidates(sig(title, body + "\nسطر آخر جديد."))
    assert [c.ref for c in first] == [c.ref for c in again] == ["kept"]
    # The stored record form: the body MinHash cut to 8 bits a value, no band minima.
    assert first[0].signature == Signature.from_bytes(stored.to_bytes(record=True))
    assert again[0].signature is first[0].signature  # decoded once, shared (signatures are immutable)
    assert decode_record.cache_info().hits == 1
    record = encode_ref("other") + stored.to_bytes(record=True)
    assert decode_record(record) == ("other", first[0].signature)


def test_near_duplicate_found_and_unrelated_not(index: NearDupIndex, stories: list[tuple[str, str]]) -> None:
    for i, (title, body) in enumerate(stories[:30]):
        index.add(f"s{i}", sig(title, body))
    rnd = random.Random(1)
    title, body = stories[5]
    edited = sig(
        cv.reword_title(title, rnd),
        "\n".join(cv.typo_edit(cv._paras(body), rnd, 2)),
        at=T0 + timedelta(hours=2),
    )
    found = index.candidates(edited)
    assert found and found[0].ref == "s5"
    assert compare(found[0].signature, edited).same_story
    # A story of the same day that is not in the index matches nothing that compare() accepts.
    other = sig(*stories[40])
    assert not any(compare(c.signature, other).same_story for c in index.candidates(other))


def test_lookup_and_add_returns_earlier_and_adds(index: NearDupIndex, stories: list[tuple[str, str]]) -> None:
    title, body = stories[0]
    first = index.lookup_and_add("a", sig(title, body))
    assert first.candidates == [] and first.seq > 0
    second = index.lookup_and_add("b", sig(title, body + "\nسطر جديد في آخر الخبر."))
    assert [c.ref for c in second.candidates] == ["a"]
    # A redelivery of "b" does not find itself.
    again = index.lookup_and_add("b", sig(title, body + "\nسطر جديد في آخر الخبر."))
    assert [c.ref for c in again.candidates] == ["a"]


def test_window_keeps_stories_apart(index: NearDupIndex, stories: list[tuple[str, str]]) -> None:
    title, body = stories[1]
    index.add("old", sig(title, body, at=T0))
    assert index.candidates(sig(title, body, at=T0 + timedelta(days=30))) == []
    assert [c.ref for c in index.candidates(sig(title, body, at=T0 + timedelta(days=6)))] == ["old"]


def test_every_key_has_a_ttl_of_three_windows(
    client: redis.Redis, index: NearDupIndex, stories: list[tuple[str, str]]
) -> None:
    for i, (title, body) in enumerate(stories[:5]):
        index.add(f"s{i}", sig(title, body))
    keys = [k for k in index.redis_keys() if not k.endswith((b":meta", b":seq"))]
    assert len(keys) > 5
    ttls = [client.pttl(k) for k in keys]
    window_ms = index.window_days * 24 * 3600 * 1000
    assert all(2 * window_ms < t <= 3 * window_ms for t in ttls), ttls


def test_lost_index_raises_until_rebuilt(
    client: redis.Redis, index: NearDupIndex, stories: list[tuple[str, str]]
) -> None:
    sigs = {f"s{i}": sig(t, b) for i, (t, b) in enumerate(stories[:20])}
    for ref, s in sigs.items():
        index.add(ref, s)
    generation = index.generation()
    # Redis loses everything (as after FLUSHDB or a restart without persistence).
    client.delete(*index.redis_keys())
    with pytest.raises(IndexLost):
        index.lookup_and_add("new", sigs["s3"])
    assert index.rebuild(sigs.items()) == 20
    assert index.generation() not in (None, generation)
    for ref, s in sigs.items():
        assert ref in [c.ref for c in index.candidates(s)]


def test_rebuild_is_exclusive(client: redis.Redis, index: NearDupIndex) -> None:
    client.set(index.prefix + "rebuild-lock", "someone", ex=30)
    with pytest.raises(RebuildInProgress):
        index.rebuild([])


def _worker(url: str, prefix: str, items: list[tuple[str, bytes]], barrier: object, out: object) -> None:
    client = redis.Redis.from_url(url)
    idx = NearDupIndex(client, prefix, expected_stories=1000)
    barrier.wait()  # type: ignore[attr-defined]
    for ref, data in items:
        found = idx.lookup_and_add(ref, Signature.from_bytes(data))
        out.put((ref, [c.ref for c in found.candidates]))  # type: ignore[attr-defined]
    client.close()


def test_atomic_lookup_and_add_under_concurrent_processes(
    redis_url: str, client: redis.Redis, redis_prefix: str, stories: list[tuple[str, str]]
) -> None:
    """Four processes add two copies of 40 stories at the same moment: every second copy finds the first."""
    prefix = f"{redis_prefix}-atomic-{uuid.uuid4().hex[:8]}"
    idx = NearDupIndex(client, prefix, expected_stories=1000)
    idx.ensure()
    items = []
    for i, (title, body) in enumerate(stories[:40]):
        data = sig(title, body).to_bytes()
        items += [(f"{i}-a", data), (f"{i}-b", data)]
    random.Random(5).shuffle(items)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(redis_url, prefix, items[k::4], barrier, out)) for k in range(4)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in items)
    for p in procs:
        p.join(timeout=60)
    try:
        for i in range(40):
            a, b = results[f"{i}-a"], results[f"{i}-b"]
            # Exactly one of the two copies saw the other: neither both nor none created a new story.
            assert (f"{i}-b" in a) != (f"{i}-a" in b), (i, a, b)
    finally:
        idx.drop()
