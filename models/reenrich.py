"""Re-enrichment of stored stories: the selection, the in-place update, and one record per story per run.

``akhbar replay --from-db`` selects stored stories (:func:`select_story_ids`) and sends their ids to
the workers, which lock each story (:func:`lock_stories`), enrich it again, update its row in place
(:func:`update_stories`) and write a :class:`Reenrichment` record in the same transaction
(:func:`record_outcomes`). The records are how the command knows when its run is done and what
changed (:func:`outcome_counts`, :func:`changed_fields`), in embedded mode (no result backend, no
Redis) as well as distributed mode; and they make a redelivered message harmless: the stories it
names already have a record for the run (:func:`finished`), so nothing is done twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String, Text, and_, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, insert_for, utcnow
from models.delivery import Delivery
from models.story import Story, StoryVersion

# What became of one story in one run. "missing": the story was deleted after it was selected.
REENRICH_OUTCOMES = ("updated", "unchanged", "failed", "missing")


class Reenrichment(Base):
    """One story's outcome in one re-enrichment run."""

    __tablename__ = "reenrichments"
    __table_args__ = (
        CheckConstraint("outcome IN ('updated', 'unchanged', 'failed', 'missing')", name="outcome"),
    )

    # The primary key leads with run_id: the command polls its run's records by it.
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key: a run's record stays meaningful (and cheap to keep) after a story is deleted.
    story_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    outcome: Mapped[str] = mapped_column(String(16))
    # Enrichment fields whose value changed ("places", "language", ...); empty unless "updated".
    changed: Mapped[list[Any]]
    # The enrichment version the worker ran.
    enrichment_version: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


def select_story_ids(session: Session, *, not_version: str | None, since: datetime | None = None,
                     source: str | None = None) -> list[int]:
    """Ids of stored stories to enrich again, in id order.

    ``not_version``: only stories whose ``enrichment_version`` differs from it (None: every story);
    ``since``: only stories stored (``created_at``) at or after it; ``source``: only this source.
    """
    stmt = select(Story.id).order_by(Story.id)
    if not_version is not None:
        stmt = stmt.where(Story.enrichment_version != not_version)
    if since is not None:
        stmt = stmt.where(Story.created_at >= since)
    if source is not None:
        stmt = stmt.where(Story.source == source)
    return list(session.scalars(stmt.execution_options(yield_per=10_000)))


@dataclass(frozen=True, slots=True)
class StoredStory:
    """What re-enrichment reads of a stored story."""

    id: int
    title: str | None
    body: str
    paragraphs: list[str]
    normalized_title: str
    normalized_body: str
    published_at: datetime | None
    language: str | None
    enrichment: dict[str, Any]
    enrichment_version: str
    updated_at: datetime
    # The language the source declared for the story's current version, if any.
    language_hint: str | None


def lock_stories(session: Session, story_ids: Sequence[int]) -> list[StoredStory]:
    """Read the stories (those that still exist), locking their rows until the transaction ends.

    The lock (``FOR UPDATE OF stories`` on PostgreSQL; SQLite's write transaction already excludes
    other writers) keeps an update of the same story from interleaving with its re-enrichment, and
    makes a concurrent redelivery of the same message wait, then find the records this one wrote.
    Rows are locked in id order, so two runs over overlapping stories cannot deadlock.
    """
    if not story_ids:
        return []
    # The source's declared language travels on the delivery of the story's current version.
    current = and_(StoryVersion.story_id == Story.id, StoryVersion.version == Story.version)
    delivery = func.coalesce(StoryVersion.delivery_id, Story.canonical_delivery_id)
    stmt = (
        select(Story.id, Story.title, Story.body, Story.paragraphs, Story.normalized_title,
               Story.normalized_body, Story.published_at, Story.language, Story.enrichment,
               Story.enrichment_version, Story.updated_at, Delivery.record)
        .outerjoin(StoryVersion, current)
        .outerjoin(Delivery, Delivery.id == delivery)
        .where(Story.id.in_(list(story_ids)))
        .order_by(Story.id)
        .with_for_update(of=Story)
    )
    stories = []
    for row in session.execute(stmt):
        record = row.record or {}
        stories.append(StoredStory(
            id=row.id, title=row.title, body=row.body, paragraphs=list(row.paragraphs),
            normalized_title=row.normalized_title, normalized_body=row.normalized_body,
            published_at=row.published_at, language=row.language, enrichment=row.enrichment or {},
            enrichment_version=row.enrichment_version, updated_at=row.updated_at,
            language_hint=record.get("language"),
        ))
    return stories


def finished(session: Session, run_id: str, story_ids: Iterable[int]) -> set[int]:
    """Which of ``story_ids`` already have a record in ``run_id`` (a redelivered message)."""
    ids = list(story_ids)
    if not ids:
        return set()
    stmt = select(Reenrichment.story_id).where(Reenrichment.run_id == run_id, Reenrichment.story_id.in_(ids))
    return set(session.scalars(stmt))


def update_stories(session: Session, values: Sequence[dict[str, Any]]) -> None:
    """Write new enrichments in place: each dict holds ``id``, ``enrichment``, ``enrichment_version``,
    ``language`` and ``updated_at`` (one executemany for the lot)."""
    if values:
        # ORM bulk UPDATE by primary key: one statement executed for every parameter set.
        # https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html#orm-bulk-update-by-primary-key
        session.execute(update(Story), list(values))


def record_outcomes(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert outcome records (``run_id``, ``story_id``, ``outcome``, ``changed``,
    ``enrichment_version``, ``error``); a record already there is kept as it is."""
    if not rows:
        return
    insert = insert_for(session)
    session.execute(insert(Reenrichment).values(list(rows)).on_conflict_do_nothing(
        index_elements=["run_id", "story_id"]))


def outcome_counts(session: Session, run_id: str) -> dict[str, int]:
    """Records of one run written so far, by outcome."""
    rows = session.execute(
        select(Reenrichment.outcome, func.count()).where(Reenrichment.run_id == run_id)
        .group_by(Reenrichment.outcome)
    )
    return {outcome: int(n) for outcome, n in rows.tuples()}


def changed_fields(session: Session, run_id: str) -> dict[str, int]:
    """For one run: in how many stories each enrichment field changed, most changed first."""
    counter: Counter[str] = Counter()
    stmt = (select(Reenrichment.changed)
            .where(Reenrichment.run_id == run_id, Reenrichment.outcome == "updated")
            .execution_options(yield_per=5000))
    for changed in session.scalars(stmt):
        counter.update(changed)
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def failures(session: Session, run_id: str, *, limit: int = 20) -> list[tuple[int, str | None]]:
    """The first failed stories of one run with their errors."""
    rows = session.execute(
        select(Reenrichment.story_id, Reenrichment.error)
        .where(Reenrichment.run_id == run_id, Reenrichment.outcome == "failed")
        .order_by(Reenrichment.story_id).limit(limit)
    )
    return [(int(story_id), error) for story_id, error in rows.tuples()]
