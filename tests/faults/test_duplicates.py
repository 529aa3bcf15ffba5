"""Scenario 8: exact duplicates racing each other on two workers, one story per pair."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from sqlalchemy import func, select

from tests.faults.conftest import account, assert_guarantees, corpus, expected_hashes, report, to_items
from tests.faults.harness import Env, chunks

pytestmark = [pytest.mark.faults, pytest.mark.slow]

PAIRS_PER_KIND = 250
KINDS = ("same_delivery_id", "same_source_id", "same_text", "same_after_normalization")
_WORD = re.compile(r"[\u0621-\u064a]{4,}")
_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _variant(text: str) -> str:
    """The same text as the normalizer sees it, written differently: a tatweel and a fatha inside
    the first long word of each line, Arabic-Indic digits, doubled spaces."""

    def line(s: str) -> str:
        m = _WORD.search(s)
        if m:
            w = m.group(0)
            s = s[: m.start()] + w[:2] + "\u0640" + w[2] + "\u064e" + w[3:] + s[m.end() :]
        return s.translate(_DIGITS).replace(" ", "  ", 1)

    return "\n".join(line(s) for s in text.split("\n"))


def test_8_exact_duplicate_race(env: Env) -> None:
    """1,000 pairs, the two halves of each pair in two messages consumed at the same moment by two
    workers: the same message twice (same delivery id), the same source id twice, the same text
    under two ids, and texts equal only after normalization. One story per pair; no unique-key
    violation surfaces as a task failure."""
    from producers.publish import Publisher
    from worker.stages.normalize import match_form

    articles = corpus(len(KINDS) * PAIRS_PER_KIND, offset=3000)
    publisher = Publisher(env.settings())
    run_id = uuid.uuid4().hex
    firsts, seconds, records = [], [], []
    for i, article in enumerate(articles):
        kind = KINDS[i % len(KINDS)]
        first = publisher.wrap(to_items([article])[0], run_id=run_id, correlation_id=run_id)
        if kind == "same_delivery_id":
            second = first
        elif kind == "same_source_id":
            second = publisher.wrap(to_items([article])[0], run_id=run_id, correlation_id=run_id)
        elif kind == "same_text":
            second = publisher.wrap(
                to_items([dict(article, id=article["id"] + "#copy")])[0], run_id=run_id, correlation_id=run_id
            )
        else:
            twin = dict(
                article,
                id=article["id"] + "#variant",
                title=_variant(article["title"] or ""),
                body=_variant(article["body"]),
            )
            assert twin["body"] != article["body"]
            assert match_form(twin["body"]) == match_form(article["body"])
            second = publisher.wrap(to_items([twin])[0], run_id=run_id, correlation_id=run_id)
        firsts.append(first)
        seconds.append(second)
        records.append(article)
    # Message k holds the first halves, message k+1 the second halves in the same order: two
    # workers take them together, and meet on every pair.
    for a, b in zip(chunks(firsts, 25), chunks(seconds, 25), strict=True):
        publisher.send(a)
        publisher.send(b)
    ids = [m.delivery_id for m in firsts] + [m.delivery_id for m in seconds]
    unique_ids = sorted(set(ids))
    env.start_workers(2)
    started = time.monotonic()
    from tests.faults.conftest import wait_committed

    assert wait_committed(env, run_id, len(unique_ids), 240)
    expected = expected_hashes(records)
    figures = account(env, unique_ids, "8 exact-duplicate race", expected)
    figures.sent = len(ids)
    figures.seconds = round(time.monotonic() - started, 2)
    from models import Execution, Story
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        stories = int(session.scalar(select(func.count()).select_from(Story)) or 0)
        errors = int(
            session.scalar(select(func.count()).select_from(Execution).where(Execution.outcome == "error"))
            or 0
        )
    logs = env.all_logs()
    failures = sum(
        logs.count(marker)
        for marker in ("IntegrityError", "UniqueViolation", "delivery_failed", "raised unexpected")
    )
    figures.notes.update(
        pairs=len(articles),
        unique_deliveries=len(unique_ids),
        stories=stories,
        task_failures=failures,
        error_attempts=errors,
    )
    report(figures)
    assert_guarantees(figures)
    # One stored text per pair (a story, or a near-duplicate or version of another pair's story).
    assert figures.notes["texts_kept"] == len(expected) and figures.notes["texts_missing"] == 0
    assert stories <= len(expected)
    assert figures.stored + figures.matched == len(unique_ids)
    assert failures == 0 and errors == 0
