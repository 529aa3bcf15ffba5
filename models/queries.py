"""Read-side queries: export, story listings, run summaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
    yield from session.execute(stmt).tuples()


def iter_export(session: Session, *, batch: int = 1000
                ) -> Iterator[tuple[Delivery, Story | None, list[dict[str, Any]] | None]]:
    """:func:`iter_export_rows` with the versions of each delivery's story (:func:`story_versions`),
    read once per ``batch`` deliveries."""
    pending: list[tuple[Delivery, Story | None]] = []
    for row in iter_export_rows(session, batch=batch):
        pending.append(row)
        if len(pending) >= batch:
            yield from _with_versions(session, pending)
            pending = []
    yield from _with_versions(session, pending)


def _with_versions(session: Session, rows: list[tuple[Delivery, Story | None]]
                   ) -> Iterator[tuple[Delivery, Story | None, list[dict[str, Any]] | None]]:
    versions = story_versions(session, {d.story_id for d, _ in rows if d.story_id is not None})
    for delivery, story in rows:
        yield delivery, story, versions.get(delivery.story_id) if delivery.story_id is not None else None


def story_versions(session: Session, story_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Each story's versions in order: version, the delivery that made it, its headline, when it
    was stored and what changed from the version before (None for the first), one SELECT."""
    ids = sorted(set(story_ids))
    out: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return out
    rows = session.execute(
        select(StoryVersion.story_id, StoryVersion.version, StoryVersion.delivery_id, StoryVersion.title,
               StoryVersion.changes, StoryVersion.created_at)
        .where(StoryVersion.story_id.in_(ids)).order_by(StoryVersion.story_id, StoryVersion.version)).tuples()
    for story_id, version, delivery_id, title, changes, created_at in rows:
        out.setdefault(story_id, []).append({
            "version": version, "delivery_id": delivery_id, "title": title, "changes": changes,
            "created_at": created_at.isoformat() if created_at else None})
    return out


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
