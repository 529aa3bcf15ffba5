"""The naive baseline's task: one story per message, every step the obvious way.

Per story: CAMeL Tools' stock chain for the match form (``normalize_unicode``, the ``arclean``
CharMapper, ``dediac_ar``, the folds, ``simple_word_tokenize``); a SELECT for the (source, id)
and one for the content hash; a datasketch MinHash of word 3-grams queried against and inserted
into a MinHashLSH kept in Redis; an ORM insert committed on its own. Each step's time is logged as
one ``naive_timings`` line, which ``bench.e2e`` reads for the per-stage medians.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from celery.signals import worker_process_init
from datasketch import MinHash, MinHashLSH
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from akhbar.settings import get_settings
from bench.naive.app import app
from bench.naive.models import NaiveDelivery, NaiveStory
from models.session import normalize_url
from producers.records import split_paragraphs
from worker.stages.normalize import content_hash, match_form_reference

log = logging.getLogger("bench.naive")

NUM_PERM = 128
# The threshold bench.neardup picks for datasketch on its tuning days.
THRESHOLD = 0.5

_state: dict[str, Any] = {}


def _lsh() -> MinHashLSH:
    settings = get_settings()
    client = settings.broker_url.split("://", 1)[1]
    hostport, _, db = client.partition("/")
    host, _, port = hostport.rpartition("@")[2].partition(":")
    storage = {
        "type": "redis",
        "basename": f"{settings.redis_prefix}:lsh".encode(),
        "redis": {"host": host or "127.0.0.1", "port": int(port or 6379), "db": int(db or 0)},
    }
    return MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, storage_config=storage)


@worker_process_init.connect
def _per_process(**_: Any) -> None:
    # Engines and Redis connections must not cross a fork.
    _state.clear()


def _engine() -> Engine:
    if "engine" not in _state:
        _state["engine"] = create_engine(normalize_url(get_settings().database_url), pool_size=1)
        _state["lsh"] = _lsh()
    return _state["engine"]  # type: ignore[no-any-return]


def shingles(match_body: str) -> list[bytes]:
    """Word 3-grams of a match form, the set a MinHash is built from."""
    words = [w for w in match_body.split() if w.isalnum()]
    if len(words) < 3:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + 3]).encode() for i in range(len(words) - 2)]


@app.task(name="naive.ingest")
def ingest(
    *,
    delivery_id: str,
    received_at: str,
    source: str,
    source_id: str,
    title: str | None,
    body: str,
    format: str = "json",
) -> str:
    """Store one story, a duplicate of an earlier one, or a near-duplicate of one; returns the status."""
    engine = _engine()
    lsh: MinHashLSH = _state["lsh"]
    timings: dict[str, float] = {}
    t = time.perf_counter()
    match_title = match_form_reference(title or "")
    match_body = "\n".join(m for m in (match_form_reference(p) for p in split_paragraphs(body, format)) if m)
    digest = content_hash(match_title, match_body)
    timings["normalize"] = time.perf_counter() - t
    with Session(engine) as session:
        t = time.perf_counter()
        if session.get(NaiveDelivery, delivery_id) is not None:
            return "already_processed"
        story_id = session.scalar(
            select(NaiveDelivery.story_id)
            .where(NaiveDelivery.source == source, NaiveDelivery.source_id == source_id)
            .limit(1)
        )
        if story_id is None:
            story_id = session.scalar(select(NaiveStory.id).where(NaiveStory.content_hash == digest).limit(1))
        timings["exact"] = time.perf_counter() - t
        status = "duplicate"
        if story_id is None:
            t = time.perf_counter()
            minhash = MinHash(num_perm=NUM_PERM)
            minhash.update_batch(shingles(match_body))
            hits = lsh.query(minhash)
            timings["neardup"] = time.perf_counter() - t
            if hits:
                status, story_id = "near_duplicate", int(str(hits[0]).split(":", 1)[0])
            else:
                story = NaiveStory(
                    source=source,
                    source_id=source_id,
                    title=title,
                    body=body,
                    normalized_title=match_title,
                    normalized_body=match_body,
                    content_hash=digest,
                )
                session.add(story)
                session.flush()
                status, story_id = "new", story.id
            t = time.perf_counter()
            lsh.insert(f"{story_id}:{delivery_id}", minhash)
            timings["neardup"] += time.perf_counter() - t
        session.add(
            NaiveDelivery(
                id=delivery_id,
                source=source,
                source_id=source_id,
                status=status,
                story_id=story_id,
                received_at=datetime.fromisoformat(received_at),
                processed_at=datetime.now(UTC),
            )
        )
        t = time.perf_counter()
        session.commit()
        timings["commit"] = time.perf_counter() - t
    log.info("naive_timings %s", orjson.dumps({k: round(v * 1000, 3) for k, v in timings.items()}).decode())
    return status
