"""Read-side queries: export, story listings, run summaries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.delivery import Delivery
from models.story import Story, StoryVersion


def iter_export_rows(session: Session, *, batch: int = 1000) -> Iterator[tuple[Delivery, Story | None]]:
    """Every delivery in receipt order, with the story it belongs to."""
    stmt = (
        select(Delivery, Story)
        .outerjoin(Story, Story.id == Delivery.story_id)
        .order_by(Delivery.received_at, Delivery.id)
        .execution_options(yield_per=batch)
    )
    for delivery, story in session.execute(stmt).tuples():
        yield delivery, story


def list_stories(session: Session, *, limit: int = 20, source: str | None = None) -> list[tuple[Story, int]]:
    """Most recent stories first, each with its number of deliveries."""
    deliveries = (
        select(Delivery.story_id, func.count().label("n")).group_by(Delivery.story_id).subquery()
    )
    stmt = (
        select(Story, func.coalesce(deliveries.c.n, 0))
        .outerjoin(deliveries, deliveries.c.story_id == Story.id)
        .order_by(Story.id.desc())
        .limit(limit)
    )
    if source:
        stmt = stmt.where(Story.source == source)
    return [(story, int(n)) for story, n in session.execute(stmt).tuples()]


def story_detail(session: Session, story_id: int) -> dict[str, Any] | None:
    """A story with its versions and its deliveries."""
    story = session.get(Story, story_id)
    if story is None:
        return None
    versions = session.scalars(
        select(StoryVersion).where(StoryVersion.story_id == story_id).order_by(StoryVersion.version)
    ).all()
    deliveries = session.execute(
        select(Delivery.id, Delivery.source, Delivery.source_id, Delivery.status, Delivery.version,
               Delivery.duplicate_of, Delivery.received_at)
        .where(Delivery.story_id == story_id)
        .order_by(Delivery.received_at, Delivery.id)
    ).all()
    return {"story": story, "versions": list(versions), "deliveries": [row._asdict() for row in deliveries]}


def total_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).tuples()
    return {status: int(n) for status, n in rows}
