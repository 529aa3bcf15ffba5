"""The delivery aggregate: every delivery received, whatever became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# Every delivery ends in exactly one of these.
STATUSES = ("new", "duplicate", "near_duplicate", "update", "rejected")


class Delivery(Base):
    """One story as a source sent it, and what the pipeline made of it."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_received", "received_at", "id"),
        Index("ix_deliveries_source_source_id", "source", "source_id"),
        # The dead-letter listing (rejected deliveries, oldest first); the other statuses, nearly
        # every row, are never looked up by status, so they are not indexed by it.
        Index("ix_deliveries_rejected", "received_at", "id", postgresql_where=text("status = 'rejected'"),
              sqlite_where=text("status = 'rejected'")),
    )

    # A UUIDv7 from the producer: time-ordered, and the same on every redelivery of the message.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(128))
    source_id: Mapped[str | None] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    correlation_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="SET NULL"), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    # The remaining contract fields (url, published_at, language) and unknown fields (extra), as sent.
    record: Mapped[dict[str, Any] | None]
    # The raw bytes of a rejected delivery, exactly as received.
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    # {"code": ..., "message": ..., "traceback": ...} for rejected deliveries.
    error: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    # The near-duplicate signature of a delivery that was not an exact duplicate: the Redis index
    # is rebuilt from these when it has been lost.
    neardup_signature: Mapped[bytes | None] = mapped_column(LargeBinary)
