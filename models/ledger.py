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

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow

# Outcomes of an execution record; NULL while it runs (or forever, if its worker died).
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
    # The DeliveryMessage as JSON, zlib-compressed (Arabic text compresses about 3:1).
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
