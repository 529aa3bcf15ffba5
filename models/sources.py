"""The source aggregate: the health of each long-running source (feed, drop folder, push endpoint).

One row per source name, written by the producer process after every poll, scan or state change
(:func:`upsert_health`), read by ``akhbar sources`` (:func:`list_health`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, insert_for, utcnow

SOURCE_KINDS = ("feed", "dropfolder", "push")
SOURCE_STATES = ("active", "quiet", "disabled")


class SourceHealth(Base):
    """What a source last did and how well it is doing."""

    __tablename__ = "source_health"
    __table_args__ = (CheckConstraint("state IN ('active', 'quiet', 'disabled')", name="state"),)

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # active: polled on schedule; quiet: polled, but gave nothing new for a while; disabled: not
    # polled until re-enabled (too many hard failures, or by hand).
    state: Mapped[str] = mapped_column(String(16), default="active")
    last_seen: Mapped[datetime | None]  # when the source last gave a new item
    last_poll: Mapped[datetime | None]
    next_poll: Mapped[datetime | None]
    items: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failure_score: Mapped[float] = mapped_column(Float, default=0.0)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Kind-specific state kept across restarts (a feed's recently published item ids).
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


_FIELDS = (
    "kind",
    "state",
    "last_seen",
    "last_poll",
    "next_poll",
    "items",
    "failures",
    "consecutive_failures",
    "failure_score",
    "etag",
    "last_modified",
    "last_error",
    "cursor",
)


def upsert_health(session: Session, name: str, **fields: Any) -> None:
    """Insert or update one source's row (``INSERT ... ON CONFLICT (name) DO UPDATE``)."""
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown source health fields: {sorted(unknown)}")
    if fields.get("state") is not None and fields["state"] not in SOURCE_STATES:
        raise ValueError(f"state must be one of {SOURCE_STATES}")
    values = {"name": name, **fields, "updated_at": utcnow()}
    values.setdefault("kind", "feed")
    insert = insert_for(session)
    stmt = insert(SourceHealth).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={k: stmt.excluded[k] for k in values if k != "name"}
    )
    session.execute(stmt)


def get_health(session: Session, name: str) -> SourceHealth | None:
    """One source's row, or None."""
    return session.get(SourceHealth, name)


def list_health(
    session: Session, *, kind: str | None = None, state: str | None = None
) -> Sequence[SourceHealth]:
    """Every source's row, by name; optionally only one kind or state."""
    query = select(SourceHealth).order_by(SourceHealth.name)
    if kind is not None:
        query = query.where(SourceHealth.kind == kind)
    if state is not None:
        query = query.where(SourceHealth.state == state)
    return session.scalars(query).all()


def set_state(session: Session, name: str, state: str) -> bool:
    """Enable (``active``) or disable a source by hand; re-enabling clears its failure score so
    it is polled at once. Returns False when there is no such source."""
    if state not in SOURCE_STATES:
        raise ValueError(f"state must be one of {SOURCE_STATES}")
    values: dict[str, Any] = {"state": state, "updated_at": utcnow()}
    if state == "active":
        values.update(failure_score=0.0, consecutive_failures=0, next_poll=None)
    result = session.execute(update(SourceHealth).where(SourceHealth.name == name).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]
