"""The publish ledger's write on the real PostgreSQL: one statement per batch, sends counted."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from models.ledger import PublishedDelivery, pack_message, record_published, unpack_message


def _row(delivery_id: str, batch: str, run_id: str | None = "run-ledger") -> dict[str, object]:
    return {"delivery_id": delivery_id, "run_id": run_id, "batch_id": batch, "queue": "akhbar.bulk",
            "message": pack_message(f"message of {delivery_id} in {batch}".encode())}


def _stored(session, ids: list[str]) -> dict[str, PublishedDelivery]:
    session.expire_all()
    return {r.delivery_id: r for r in session.scalars(select(PublishedDelivery).where(
        PublishedDelivery.delivery_id.in_(ids)))}


def test_a_batch_is_recorded_and_a_second_send_is_counted(db_session) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    record_published(db_session, [_row(i, "b1", run_id=None if n % 2 else "run-ledger")
                                  for n, i in enumerate(ids)])
    first = _stored(db_session, ids)
    assert len(first) == 50
    assert {r.sends for r in first.values()} == {1}
    assert first[ids[0]].run_id == "run-ledger" and first[ids[1]].run_id is None
    assert unpack_message(first[ids[3]].message) == f"message of {ids[3]} in b1".encode()
    assert first[ids[0]].published_at == first[ids[0]].last_sent_at
    db_session.execute(update(PublishedDelivery).where(PublishedDelivery.delivery_id == ids[0])
                       .values(settled_at=first[ids[0]].published_at))

    record_published(db_session, [_row(ids[0], "b2"), _row(ids[1], "b2")])
    again = _stored(db_session, ids)
    assert [again[i].sends for i in ids[:3]] == [2, 2, 1]
    assert again[ids[0]].batch_id == "b2" and again[ids[2]].batch_id == "b1"
    assert unpack_message(again[ids[0]].message) == f"message of {ids[0]} in b2".encode()
    assert again[ids[0]].settled_at is None  # sent again: settled only once seen committed again
    assert again[ids[0]].published_at == first[ids[0]].published_at


def test_a_delivery_twice_in_one_call_keeps_its_last_row(db_session) -> None:
    delivery = str(uuid.uuid4())
    record_published(db_session, [_row(delivery, "first"), _row(delivery, "last")])
    (row,) = _stored(db_session, [delivery]).values()
    assert (row.batch_id, row.sends) == ("last", 1)


def test_an_id_given_twice_counts_its_failed_attempts_once(db_session) -> None:
    from datetime import UTC, datetime

    from models.ledger import Execution, history

    delivery = str(uuid.uuid4())
    for attempt, outcome in enumerate(("error", "timeout", None, "stored")):
        db_session.add(Execution(delivery_id=delivery, task_id="t", attempt=attempt, worker="w", pid=1,
                                 started_at=datetime.now(UTC), outcome=outcome))
    db_session.flush()
    past = history(db_session, [delivery, delivery])
    assert (past[delivery].failed, past[delivery].errors, past[delivery].timeouts,
            past[delivery].unfinished) == (3, 1, 1, 1)
    assert past[delivery].last_kind == "unfinished"


def test_rows_are_zstd_and_rows_written_before_in_zlib_still_read() -> None:
    import zlib

    import zstandard

    message = ('{"delivery_id": "d", "record": {"body": "%s"}}' % ("قال المتحدث " * 100)).encode()
    packed = pack_message(message)
    assert zstandard.ZstdDecompressor().decompress(packed) == message
    assert len(packed) < len(message) / 2
    assert unpack_message(packed) == message
    assert unpack_message(zlib.compress(message, 1)) == message
