"""The publish ledger and the execution records: what was sent, and every attempt to process it.

The ledger is the producer's own record of every delivery it published, written to the database
*before* the message goes to the broker. The broker (Redis) is fast but forgetful: a restart without
persistence, or a message popped by a worker that then dies, loses messages. The database is the
authority, so a delivery that is in the ledger but has no row in ``deliveries`` after a grace period
was lost somewhere between the two, and ``akhbar reconcile`` publishes it again from the copy kept
here. Publishing twice is harmless (delivery ids are primary keys); losing is not, hence the order.

An execution record is written, in its own short transaction, when a worker starts on a delivery,
and finished in the same transaction that commits the delivery's outcome. A record that never
finished is an attempt that crashed or hung its worker: counting them bounds how many times a
poison delivery can take a worker down before it is quarantined, and comparing their intervals
shows redeliveries and overlapping executions of the same delivery.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from akhbar import zstd
from models import bulk
from models.base import Base, insert_for, utcnow
from models.delivery import Delivery

# Outcomes of an execution record; NULL while it runs (or forever, if its worker died: then
# ``finished_at`` is set once the crash is attributed to it, see attribute_lost).
EXECUTION_OUTCOMES = ("stored", "skipped", "retry", "timeout", "error", "quarantined")
# Outcomes that count as a failed attempt of the delivery itself (a transient database outage is
# not the delivery's fault and does not count; an unfinished record does).
FAILED_OUTCOMES = ("timeout", "error")


class PublishedDelivery(Base):
    """One delivery a producer published: enough to publish it again."""

    __tablename__ = "published_deliveries"
    __table_args__ = (
        # Reconciliation scans the unsettled rows, oldest first.
        Index("ix_published_deliveries_settled_published", "settled_at", "published_at"),
    )

    delivery_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The broker message (one micro-batch) it was first sent in: the task id.
    batch_id: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    # The DeliveryMessage as JSON, compressed (see pack_message; Arabic text compresses about 3:1).
    message: Mapped[bytes] = mapped_column(LargeBinary)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Last time this delivery went to the broker (first publish, reconciliation or dlq replay).
    last_sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    sends: Mapped[int] = mapped_column(Integer, default=1)
    # Set once the delivery is seen committed; settled rows are never looked at again.
    settled_at: Mapped[datetime | None]


class Execution(Base):
    """One attempt of a worker at one delivery."""

    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_task_attempt", "task_id", "attempt"),
        CheckConstraint(
            "outcome IS NULL OR outcome IN ('stored', 'skipped', 'retry', 'timeout', 'error', 'quarantined')",
            name="outcome",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    # Celery's retry number of the message (a crash redelivers the same number).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # Set by ``akhbar dlq replay``: attempts before a replay no longer count toward quarantine.
    cleared_at: Mapped[datetime | None]


# --- publish ledger ----------------------------------------------------------------------------


def pack_message(message_json: bytes) -> bytes:
    """The stored form of a message: its JSON in one zstd frame (akhbar/zstd.py). On the corpus a
    row is 1,497 bytes for 26 us of producer CPU; zlib, used before, took 70 us at level 1 for
    1,562 bytes."""
    return zstd.compress(message_json)


def unpack_message(stored: bytes) -> bytes:
    """The JSON of a stored message: a zstd frame, or zlib for rows written before zstd."""
    return zstd.decompress(stored) if zstd.is_zstd(stored) else zlib.decompress(stored)


def record_published(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Record deliveries about to be published (``delivery_id``, ``run_id``, ``batch_id``, ``queue``,
    ``message``). A delivery already in the ledger (published again) gets its send counted."""
    if not rows:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # One statement over one array per column (models/bulk.py): a parameter list would be one
        # INSERT per row for the server and a bind-processing pass per value in the producer.
        # A delivery may appear once per statement (ON CONFLICT DO UPDATE): the last row counts.
        last = list({row["delivery_id"]: row for row in rows}.values())
        columns: dict[str, list[Any]] = {name: [r[name] for r in last] for name in _LEDGER_COLUMNS}
        n = len(last)
        columns |= {"published_at": [now] * n, "last_sent_at": [now] * n, "sends": [1] * n}
        bulk.insert_columns(session.connection(), _LEDGER, columns, conflict=("delivery_id",),
                            on_conflict=_SENT_AGAIN)
        return
    # One statement for any number of rows, executed with a parameter list: compiled once per
    # process and cached, where a multi-row VALUES construct is compiled again for every batch.
    insert = insert_for(session)
    stmt = insert(PublishedDelivery)
    stmt = stmt.on_conflict_do_update(
        index_elements=["delivery_id"],
        set_={**{name: stmt.excluded[name] for name in _RESENT_COLUMNS},
              "sends": PublishedDelivery.sends + 1, "settled_at": None},
    )
    session.execute(stmt, [{**row, "published_at": now, "last_sent_at": now} for row in rows])


_LEDGER = cast(Table, PublishedDelivery.__table__)
_LEDGER_COLUMNS = ("delivery_id", "run_id", "batch_id", "queue", "message")
# A delivery published again takes these from its new send, counts the send and is unsettled
# again: both statements above make this change.
_RESENT_COLUMNS = ("batch_id", "queue", "message", "last_sent_at")
_SENT_AGAIN = ("DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in _RESENT_COLUMNS)
               + ", sends = published_deliveries.sends + 1, settled_at = NULL")


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A ledger row not yet seen committed, and whether its delivery has been committed since."""

    delivery_id: str
    batch_id: str
    queue: str
    message: bytes
    sends: int
    committed: bool
    published_at: datetime


def unsettled(session: Session, *, older_than: datetime, limit: int,
              after: tuple[datetime, str] | None = None) -> list[Unsettled]:
    """Unsettled ledger rows last sent before ``older_than``, oldest first, with their store state;
    ``after`` is the (published_at, delivery_id) of the last row of the previous page."""
    stmt = (
        select(PublishedDelivery.delivery_id, PublishedDelivery.batch_id, PublishedDelivery.queue,
               PublishedDelivery.message, PublishedDelivery.sends, PublishedDelivery.published_at,
               Delivery.id.is_not(None).label("committed"))
        .outerjoin(Delivery, Delivery.id == PublishedDelivery.delivery_id)
        .where(PublishedDelivery.settled_at.is_(None), PublishedDelivery.published_at < older_than,
               PublishedDelivery.last_sent_at < older_than)
        .order_by(PublishedDelivery.published_at, PublishedDelivery.delivery_id)
        .limit(limit)
    )
    if after is not None:
        at, delivery_id = after
        same_time = (PublishedDelivery.published_at == at) & (PublishedDelivery.delivery_id > delivery_id)
        stmt = stmt.where(or_(PublishedDelivery.published_at > at, same_time))
    return [Unsettled(r.delivery_id, r.batch_id, r.queue, r.message, r.sends, bool(r.committed),
                      r.published_at) for r in session.execute(stmt)]


def settle(session: Session, delivery_ids: Iterable[str]) -> int:
    """Mark committed deliveries settled and drop their stored message (the store has the story)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    result = session.execute(
        update(PublishedDelivery).where(PublishedDelivery.delivery_id.in_(ids))
        .values(settled_at=utcnow(), message=b"")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def ledger_counts(session: Session, run_id: str | None = None) -> dict[str, int]:
    """Ledger rows: published, settled, unsettled (optionally for one run)."""
    stmt = select(func.count(), func.count(PublishedDelivery.settled_at))
    if run_id is not None:
        stmt = stmt.where(PublishedDelivery.run_id == run_id)
    total, settled = session.execute(stmt).one()
    return {"published": int(total), "settled": int(settled), "unsettled": int(total) - int(settled)}


def ledger_message(session: Session, delivery_id: str) -> bytes | None:
    """The stored (unpacked) message of a delivery, if the ledger still has it."""
    stored = session.scalar(
        select(PublishedDelivery.message).where(PublishedDelivery.delivery_id == delivery_id)
    )
    return unpack_message(stored) if stored else None


# --- execution records -------------------------------------------------------------------------


@dataclass(slots=True)
class History:
    """Earlier attempts at one delivery that count toward quarantine."""

    failed: int = 0  # unfinished (crashed or killed), timed out, or raised
    unfinished: int = 0
    timeouts: int = 0
    errors: int = 0
    last_error: str | None = None
    # How the latest failed attempt ended: "unfinished", "timeout" or "error".
    last_kind: str = "unfinished"


def history(session: Session, delivery_ids: Iterable[str]) -> dict[str, History]:
    """Failed earlier attempts of each delivery (not counting attempts cleared by a dlq replay)."""
    # Each id once: the query probes one id per element, and an id given twice would count its
    # attempts twice.
    ids = list(dict.fromkeys(delivery_ids))
    out: dict[str, History] = {}
    if not ids:
        return out
    rows: Iterable[Any]
    if session.get_bind().dialect.name == "postgresql":
        # The ids as one array: one statement text for any batch, no per-id bind parameters.
        session.flush()
        rows = session.connection().exec_driver_sql(_HISTORY_SQL,
                                                    {"ids": ids, "failed": list(FAILED_OUTCOMES)})
    else:
        failed = or_(Execution.outcome.is_(None), Execution.outcome.in_(FAILED_OUTCOMES))
        rows = session.execute(
            select(Execution.delivery_id, Execution.outcome, Execution.error)
            .where(Execution.delivery_id.in_(ids), Execution.cleared_at.is_(None), failed)
            .order_by(Execution.id)
        )
    for delivery_id, outcome, error in rows:
        h = out.setdefault(delivery_id, History())
        h.failed += 1
        if outcome is None:
            h.unfinished += 1
            h.last_kind = "unfinished"
        elif outcome == "timeout":
            h.timeouts += 1
            h.last_kind = "timeout"
        else:
            h.errors += 1
            h.last_kind = "error"
        if error:
            h.last_error = error
    return out


# One index probe per delivery (see _HOLDERS_SQL in models/ingest.py): the ORDER BY keeps the
# LATERAL subquery from being flattened into a join, which a new database, without statistics,
# would plan as a sequential scan of every execution recorded so far.
_HISTORY_SQL = (
    "SELECT e.delivery_id, e.outcome, e.error FROM unnest(%(ids)b::varchar[]) AS u(delivery_id)"
    " CROSS JOIN LATERAL (SELECT x.id, x.delivery_id, x.outcome, x.error FROM executions x"
    " WHERE x.delivery_id = u.delivery_id AND x.cleared_at IS NULL"
    " AND (x.outcome IS NULL OR x.outcome = ANY(%(failed)b::varchar[])) ORDER BY x.id) AS e"
    " ORDER BY e.id"
)


def settle_retried(session: Session, *, task_id: str, attempt: int) -> int:
    """Mark earlier attempts of a retried message as ``retry`` where the worker could not (the
    database was down when it decided to retry): a retry is not a failure of the delivery."""
    if attempt <= 0:
        return 0
    # A sealed crash (finished_at set, no outcome: see attribute_lost) stays a crash.
    result = session.execute(
        update(Execution)
        .where(Execution.task_id == task_id, Execution.attempt < attempt, Execution.outcome.is_(None),
               Execution.finished_at.is_(None))
        .values(outcome="retry", finished_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def attribute_lost(session: Session, *, task_id: str, attempt: int, culprit: str) -> int:
    """An attempt at message ``task_id`` (retry ``attempt``) died while it ran ``culprit`` (its
    running mark says so): charge the lost attempt to ``culprit`` alone. Its record stays a crash
    (no outcome) but is sealed (``finished_at`` set), so that a later retry of the message does not
    take it for one the worker failed to finish (:func:`settle_retried`); the unfinished records of
    the other deliveries of that attempt are finished as ``retry``. Nothing changes unless
    ``culprit``'s own record of that attempt is still open (the worker did die during it). Returns
    how many other deliveries were relieved."""
    same = (Execution.task_id == task_id, Execution.attempt == attempt, Execution.outcome.is_(None),
            Execution.finished_at.is_(None))
    culprit_open = select(Execution.id).where(*same, Execution.delivery_id == culprit).exists()
    if not session.scalar(select(culprit_open)):
        return 0
    now = utcnow()
    result = session.execute(
        update(Execution)
        .where(*same, Execution.delivery_id != culprit)
        .values(outcome="retry", finished_at=now, error=f"lost with its worker while {culprit} ran")
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Execution).where(*same, Execution.delivery_id == culprit)
        .values(finished_at=now, error="its worker died while it ran")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def start_executions(session: Session, *, delivery_ids: Sequence[str], task_id: str, attempt: int,
                     worker: str, pid: int) -> dict[str, int]:
    """Insert one running execution record per delivery; returns their ids by delivery id.

    On PostgreSQL the enclosing transaction commits without waiting for its WAL flush: the record
    is visible to every other worker at once, which is what counting a crashed attempt needs; a
    database crash in the next few milliseconds could forget it, which costs one uncounted
    attempt, never a delivery. Isolated reprocessing writes one such transaction per delivery.
    https://www.postgresql.org/docs/current/wal-async-commit.html
    """
    if not delivery_ids:
        return {}
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        # One statement over unnest of the ids: its text is the same for every batch size.
        session.flush()
        rows = session.connection().exec_driver_sql(_START_SQL, {
            "ids": list(delivery_ids), "task_id": task_id, "attempt": attempt, "worker": worker, "pid": pid,
            "now": now})
        return {delivery_id: exec_id for exec_id, delivery_id in rows}
    # One cached statement with the rows as parameters (a multi-row VALUES would be compiled again
    # for every batch size); SQLAlchemy sends them as multi-row INSERTs with RETURNING.
    stmt = insert_for(session)(Execution).returning(Execution.id, Execution.delivery_id)
    params = [{"delivery_id": d, "task_id": task_id, "attempt": attempt, "worker": worker, "pid": pid,
               "started_at": now} for d in delivery_ids]
    return {delivery_id: exec_id for exec_id, delivery_id in session.execute(stmt, params)}


_START_SQL = (
    "INSERT INTO executions (delivery_id, task_id, attempt, worker, pid, started_at)"
    " SELECT u.delivery_id, %(task_id)s, %(attempt)s, %(worker)s, %(pid)s, %(now)s"
    " FROM unnest(%(ids)b::varchar[]) WITH ORDINALITY AS u(delivery_id, n) ORDER BY u.n"
    " RETURNING id, delivery_id"
)
_FINISH_SQL = (
    "UPDATE executions SET outcome = u.outcome, error = u.error, finished_at = %(now)s"
    " FROM unnest(%(ids)b::int[], %(outcomes)b::varchar[], %(errors)b::text[]) AS u(id, outcome, error)"
    " WHERE executions.id = u.id"
)


def finish_executions(session: Session, outcomes: dict[int, tuple[str, str | None]]) -> None:
    """Finish execution records: ``{execution id: (outcome, error)}``."""
    if not outcomes:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # One UPDATE over unnest of (id, outcome, error), not one per distinct outcome.
        ids = sorted(outcomes)
        session.flush()
        session.connection().exec_driver_sql(_FINISH_SQL, {
            "ids": ids, "outcomes": [outcomes[i][0] for i in ids], "errors": [outcomes[i][1] for i in ids],
            "now": now})
        return
    by_outcome: dict[tuple[str, str | None], list[int]] = {}
    for exec_id, key in outcomes.items():
        by_outcome.setdefault(key, []).append(exec_id)
    for (outcome, error), ids in by_outcome.items():
        session.execute(
            update(Execution).where(Execution.id.in_(ids))
            .values(outcome=outcome, error=error, finished_at=now)
        )


def clear_history(session: Session, delivery_ids: Iterable[str]) -> None:
    """Stop counting earlier attempts of these deliveries (they are being replayed after a fix)."""
    ids = list(delivery_ids)
    if ids:
        session.execute(
            update(Execution).where(Execution.delivery_id.in_(ids), Execution.cleared_at.is_(None))
            .values(cleared_at=utcnow())
        )


def execution_stats(session: Session, delivery_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Redeliveries (attempts beyond the first per delivery), deliveries attempted more than once,
    overlapping executions (two attempts at one delivery running at the same time), and double
    effects (more than one attempt at one delivery that stored something)."""
    base = select(Execution.delivery_id, Execution.started_at, Execution.finished_at, Execution.outcome)
    if delivery_ids is not None:
        base = base.where(Execution.delivery_id.in_(list(delivery_ids)))
    per: dict[str, list[tuple[datetime, datetime | None, str | None]]] = {}
    for delivery_id, started, finished, outcome in session.execute(base):
        per.setdefault(delivery_id, []).append((started, finished, outcome))
    redeliveries = repeated = overlapping = double = 0
    for runs in per.values():
        if len(runs) > 1:
            repeated += 1
            redeliveries += len(runs) - 1
        if sum(1 for r in runs if r[2] == "stored") > 1:
            double += 1
        runs.sort(key=lambda r: r[0])
        for i, (_, finished, _) in enumerate(runs):
            # An unfinished record overlaps what came after it only if its worker was still alive;
            # that cannot be known here, so it does not count (a crash is not an overlap).
            if finished is not None:
                overlapping += sum(1 for later in runs[i + 1:] if later[0] < finished)
    return {"executions": sum(len(r) for r in per.values()), "redeliveries": redeliveries,
            "repeated_deliveries": repeated, "overlapping": overlapping, "double_effects": double}


# --- dead-letter queue -------------------------------------------------------------------------


def quarantined(session: Session, *, codes: Sequence[str], reason: str | None = None,
                limit: int | None = None) -> list[Delivery]:
    """Quarantined deliveries (rejected with one of ``codes``, or only ``reason``), oldest first."""
    code = Delivery.error["code"].as_string()
    stmt = (
        select(Delivery).where(Delivery.status == "rejected", code.in_([reason] if reason else list(codes)))
        .order_by(Delivery.received_at, Delivery.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def release_quarantined(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Take quarantined deliveries out of the store to publish them again, in one transaction with
    their new ledger rows (``record_published`` rows), so that if publishing fails afterwards the
    reconciler still finds them: released, unsettled, not committed."""
    ids = [r["delivery_id"] for r in rows]
    if not ids:
        return 0
    result = session.execute(delete(Delivery).where(Delivery.id.in_(ids), Delivery.status == "rejected"))
    clear_history(session, ids)
    record_published(session, rows)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- retention ---------------------------------------------------------------------------------
#
# Neither table is needed forever: a settled ledger row has done its job (its delivery is in the
# store, its message was dropped when it settled), and the execution records of a committed
# delivery only serve audits of redeliveries. Both are deleted after a retention period, a bounded
# batch per transaction, rows that another transaction holds locked skipped (SKIP LOCKED on
# PostgreSQL), so pruning never holds or waits on a lock for long. What is still needed is never
# touched: a ledger row not settled, or whose delivery is not committed (the reconciler's work),
# and the execution records of a delivery not committed (they count its attempts toward quarantine).


def prune_ledger(session: Session, *, settled_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` ledger rows settled before ``settled_before`` whose delivery is
    committed, oldest first; returns how many. The caller commits."""
    committed = select(Delivery.id).where(Delivery.id == PublishedDelivery.delivery_id).exists()
    settled = PublishedDelivery.settled_at
    old = (settled.is_not(None), settled < settled_before, committed)
    pick = (
        select(PublishedDelivery.delivery_id).where(*old)
        .order_by(PublishedDelivery.settled_at).limit(limit)
        .with_for_update(skip_locked=True)
    )
    # The conditions again on the rows deleted: a row that changed since it was picked (published
    # again by `dlq replay`, hence unsettled) stays.
    result = session.execute(
        delete(PublishedDelivery)
        .where(PublishedDelivery.delivery_id.in_(pick.scalar_subquery()), *old)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def prune_executions(session: Session, *, started_before: datetime, after_id: int,
                     limit: int) -> tuple[int, int | None]:
    """Delete the execution records, among the next ``limit`` after id ``after_id``, that started
    before ``started_before`` and whose delivery is committed. Returns how many were deleted and
    the id to continue after, or None once the page reached records newer than the cutoff (ids
    grow with start times, so everything after is newer too) or the end of the table."""
    page = session.execute(
        select(Execution.id, Execution.started_at).where(Execution.id > after_id)
        .order_by(Execution.id).limit(limit)
    ).all()
    if not page:
        return 0, None
    ids = [exec_id for exec_id, started in page if started < started_before]
    deleted = 0
    if ids:
        committed = select(Delivery.id).where(Delivery.id == Execution.delivery_id).exists()
        old = (Execution.started_at < started_before, committed)
        pick = select(Execution.id).where(Execution.id.in_(ids), *old).with_for_update(skip_locked=True)
        result = session.execute(
            delete(Execution).where(Execution.id.in_(pick.scalar_subquery()), *old)
            .execution_options(synchronize_session=False)
        )
        deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
    reached_cutoff = len(ids) < len(page) or len(page) < limit
    return deleted, None if reached_cutoff else page[-1][0]
