"""Queries of the near-duplicate stage: advisory locks, candidate deliveries, joining and merging
stories.

The near-duplicate stage (:mod:`worker.stages.neardup`) runs after a delivery has been stored as a
new story; when the delivery turns out to be a near-duplicate or an update of a stored story, the
story it created is folded into that story here (:func:`apply_folds`, a fixed number of statements
per batch), and when it is the same story as several stories, those are merged into one
(:func:`merge_into`), in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import xxhash
from sqlalchemy import Table, bindparam, delete, select, text, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.delivery import Delivery
from models.ingest import guid_versions_pattern
from models.story import Fingerprint, SourceKey, Story, StoryVersion

# The key a rebuild of the index takes exclusively and every indexing transaction takes shared.
REBUILD_KEY = 0x616B6862_6E640001 - (1 << 63)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def lock_key(delivery_id: str) -> int:
    """A delivery's advisory lock key: a signed 64-bit hash of its id."""
    return xxhash.xxh64_intdigest(delivery_id.encode()) - (1 << 63)


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_for_indexing(session: Session, delivery_ids: Iterable[str]) -> None:
    """Before a delivery reaches the index: the rebuild key shared, the delivery's own key
    exclusive, both until commit, so a concurrent lookup that finds it waits for its row. Keys are
    taken in sorted order, all in one statement, so that two batches cannot deadlock. Nothing to do
    on SQLite (one writer)."""
    if not _postgresql(session):
        return
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": REBUILD_KEY})
    keys = sorted({lock_key(d) for d in delivery_ids})
    if keys:
        session.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k "
                             "ORDER BY k"), {"keys": keys})


def wait_for(session: Session, delivery_ids: Iterable[str], own: Iterable[str] = ()) -> None:
    """Wait for the transactions still writing these candidate deliveries (their keys shared, in
    sorted order, one statement)."""
    if not _postgresql(session):
        return
    mine = {lock_key(d) for d in own}
    keys = sorted({lock_key(d) for d in delivery_ids} - mine)
    if keys:
        session.execute(text("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(CAST(:keys AS bigint[])) "
                             "AS k ORDER BY k"), {"keys": keys})


def lock_rebuild(session: Session) -> None:
    """Exclusive rebuild key: waits for every transaction that is indexing a delivery."""
    if _postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REBUILD_KEY})


@dataclass(slots=True)
class StoryState:
    """What the stage needs of a story: its current version and canonical delivery."""

    id: int
    version: int
    canonical_at: datetime | None
    canonical_delivery_id: str

    def canonical_key(self) -> tuple[datetime, str]:
        """(published_at, delivery id) of the canonical delivery; no date sorts last."""
        return sort_key(self.canonical_at, self.canonical_delivery_id)


_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def sort_key(at: datetime | None, delivery_id: str) -> tuple[datetime, str]:
    """The canonical order of deliveries: by publication time (none last), then by delivery id."""
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at or _FAR_FUTURE, delivery_id)


def candidate_holders(session: Session, delivery_ids: Iterable[str]) -> dict[str, int]:
    """The story of each stored delivery among ``delivery_ids`` that belongs to one (one SELECT)."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return {}
    rows = session.execute(select(Delivery.id, Delivery.story_id)
                           .where(Delivery.id.in_(ids), Delivery.story_id.is_not(None))).tuples()
    return {d: s for d, s in rows if s is not None}


def same_guid_deliveries(session: Session, source: str, guid: str) -> list[str]:
    """The stored deliveries of a wire story's other versions: same source, source ids
    ``guid:version`` (NewsML-G2 / NITF), each belonging to a story (one SELECT)."""
    return list(session.scalars(
        select(Delivery.id).where(Delivery.source == source,
                                  Delivery.source_id.like(guid_versions_pattern(guid), escape="\\"),
                                  Delivery.story_id.is_not(None)).order_by(Delivery.id)))


def lock_stories(session: Session, story_ids: Iterable[int]) -> dict[int, StoryState]:
    """Lock stories (``FOR NO KEY UPDATE``, in id order, one statement) and read their state; a
    story missing from the result was merged into another (deleted) meanwhile.

    Every writer of the stage locks its stories this way, in one statement ordered by id, so two
    batches merging or joining overlapping stories wait for each other instead of deadlocking."""
    ids = sorted(set(story_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Story.id, Story.version, Story.published_at, Story.canonical_delivery_id)
        .where(Story.id.in_(ids)).order_by(Story.id).with_for_update(key_share=True)).tuples()
    return {r[0]: StoryState(*r) for r in rows}


def store_signatures(session: Session, signatures: dict[str, bytes]) -> None:
    """Keep each delivery's signature with it (the index is rebuilt from these): one executemany."""
    if not signatures:
        return
    table = _table(Delivery)
    stmt = table.update().where(table.c.id == bindparam("p_id")).values(neardup_signature=bindparam("p_sig"))
    session.connection().execute(stmt, [{"p_id": d, "p_sig": data} for d, data in sorted(signatures.items())])


def stored_signatures(session: Session, since: datetime | None) -> Iterator[tuple[str, bytes | None]]:
    """(delivery id, signature) of the deliveries received since ``since``, oldest first."""
    stmt = select(Delivery.id, Delivery.neardup_signature).where(Delivery.neardup_signature.is_not(None))
    if since is not None:
        stmt = stmt.where(Delivery.received_at >= since)
    yield from session.execute(stmt.order_by(Delivery.received_at, Delivery.id)
                               .execution_options(yield_per=2000)).tuples()


def rebuild_since(window_days: int, now: datetime) -> datetime:
    """The oldest receipt time a rebuild reads: the last two windows."""
    return now - timedelta(days=2 * window_days)


@dataclass(slots=True)
class Fold:
    """A delivery that created ``own_story_id`` joins ``story_id`` at ``version``.

    ``changes`` set: the delivery is an update, and its own first version becomes the story's
    version ``version`` with these changes."""

    delivery_id: str
    own_story_id: int
    story_id: int
    version: int
    status: str
    duplicate_of: str
    changes: dict[str, Any] | None = None


@dataclass(slots=True)
class StoryChange:
    """What a batch's folds change in one story row: version, canonical delivery, and (after an
    update) the text, enrichment and language of the story row ``text_from``."""

    version: int
    canonical_delivery_id: str
    published_at: datetime | None
    text_from: int | None = None


_TEXT_COLUMNS = ("title", "body", "paragraphs", "normalized_title", "normalized_body", "content_hash",
                 "enrichment", "enrichment_version", "language")


# Built once per process: building the text copy's nine subqueries over an alias took about 0.7 ms
# of CPU each time, about 100 times in 6,000 corpus deliveries.
@cache
def _copy_text_stmt() -> Any:
    """UPDATE of a story's version and canonical delivery, and its text taken from another story
    row (``p_from``): executemany-ready."""
    table = _table(Story)
    src = table.alias("src")
    copied = {c: select(src.c[c]).where(src.c.id == bindparam("p_from")).scalar_subquery()
              for c in _TEXT_COLUMNS}
    return (table.update().where(table.c.id == bindparam("p_id"))
            .values(version=bindparam("p_version"), canonical_delivery_id=bindparam("p_canonical"),
                    published_at=bindparam("p_at"), updated_at=bindparam("p_updated"), **copied))


@cache
def _state_stmt() -> Any:
    table = _table(Story)
    return (table.update().where(table.c.id == bindparam("p_id"))
            .values(version=bindparam("p_version"), canonical_delivery_id=bindparam("p_canonical"),
                    published_at=bindparam("p_at"), updated_at=bindparam("p_updated")))


def update_stories(session: Session, changes: dict[int, StoryChange]) -> None:
    """Write the stories' new state: at most two executemany UPDATEs."""
    conn = session.connection()
    now = utcnow()
    with_text = [(i, c) for i, c in sorted(changes.items()) if c.text_from is not None]
    plain = [(i, c) for i, c in sorted(changes.items()) if c.text_from is None]
    if with_text:
        conn.execute(_copy_text_stmt(),
                     [_state_params(i, c, now) | {"p_from": c.text_from} for i, c in with_text])
    if plain:
        conn.execute(_state_stmt(), [_state_params(i, c, now) for i, c in plain])


def _state_params(story_id: int, c: StoryChange, now: datetime) -> dict[str, Any]:
    return {"p_id": story_id, "p_version": c.version, "p_canonical": c.canonical_delivery_id,
            "p_at": c.published_at, "p_updated": now}


def apply_folds(session: Session, folds: list[Fold], stories: dict[int, StoryChange]) -> None:
    """Fold each delivery's own story into the story it joined, in a fixed number of statements
    (executemany): the stories' new state, the updates' versions moved, the keys and deliveries of
    the own stories moved, the deliveries' status, and the own stories deleted.

    The story rows a fold names must have been locked (:func:`lock_stories`) in this transaction.
    """
    if not folds and not stories:
        return
    conn = session.connection()
    # Texts are copied from own story rows before those go.
    update_stories(session, stories)
    if not folds:
        return
    moves = [{"p_own": f.own_story_id, "p_story": f.story_id, "p_version": f.version}
             for f in sorted(folds, key=lambda f: f.own_story_id)]
    updates = [f for f in folds if f.changes is not None]
    if updates:
        versions = _table(StoryVersion)
        conn.execute(versions.update().where(versions.c.story_id == bindparam("p_own"))
                     .values(story_id=bindparam("p_story"), version=bindparam("p_version"),
                             changes=bindparam("p_changes")),
                     [{"p_own": f.own_story_id, "p_story": f.story_id, "p_version": f.version,
                       "p_changes": f.changes} for f in sorted(updates, key=lambda f: f.own_story_id)])
    # The folding delivery first, its new status and story in one row version; the move of the
    # own story's other deliveries (exact duplicates of it) then no longer finds it.
    ordered = sorted(folds, key=lambda f: f.delivery_id)
    own_ids = [m["p_own"] for m in moves]
    if (conn.dialect.name == "postgresql" and len(set(own_ids)) == len(own_ids)
            and len({f.delivery_id for f in folds}) == len(folds)
            and not set(own_ids) & {f.story_id for f in folds}):
        # One statement per table over unnest of the values instead of one UPDATE per fold: the
        # same rows end the same, since each delivery folds once, each own story is moved once,
        # and no story is both moved and a destination (a row moved is never moved again).
        conn.exec_driver_sql(
            "UPDATE deliveries SET status = u.status, duplicate_of = u.duplicate_of,"
            " story_id = u.story_id, version = u.version"
            " FROM unnest(%(id)b::varchar[], %(status)b::varchar[], %(of)b::varchar[], %(story)b::int[],"
            " %(v)b::int[]) AS u(id, status, duplicate_of, story_id, version)"
            " WHERE deliveries.id = u.id",
            {"id": [f.delivery_id for f in ordered], "status": [f.status for f in ordered],
             "of": [f.duplicate_of for f in ordered], "story": [f.story_id for f in ordered],
             "v": [f.version for f in ordered]})
        arrays = {"own": own_ids, "story": [m["p_story"] for m in moves],
                  "v": [m["p_version"] for m in moves]}
        for name in ("source_keys", "fingerprints", "deliveries"):
            conn.exec_driver_sql(
                f"UPDATE {name} SET story_id = m.story_id, version = m.version"
                " FROM unnest(%(own)b::int[], %(story)b::int[], %(v)b::int[]) AS m(own, story_id, version)"
                f" WHERE {name}.story_id = m.own", arrays)
    else:
        deliveries = _table(Delivery)
        conn.execute(deliveries.update().where(deliveries.c.id == bindparam("p_id"))
                     .values(status=bindparam("p_status"), duplicate_of=bindparam("p_of"),
                             story_id=bindparam("p_story"), version=bindparam("p_version")),
                     [{"p_id": f.delivery_id, "p_status": f.status, "p_of": f.duplicate_of,
                       "p_story": f.story_id, "p_version": f.version} for f in ordered])
        for model in (SourceKey, Fingerprint, Delivery):
            table = _table(model)
            conn.execute(table.update().where(table.c.story_id == bindparam("p_own"))
                         .values(story_id=bindparam("p_story"), version=bindparam("p_version")), moves)
    own = sorted({f.own_story_id for f in folds})
    session.execute(delete(StoryVersion).where(StoryVersion.story_id.in_(own)))
    session.execute(delete(Story).where(Story.id.in_(own)))


@dataclass(frozen=True, slots=True)
class VersionText:
    """One stored version, as :func:`worker.stages.neardup` compares versions."""

    story_id: int
    version: int
    delivery_id: str
    title: str | None
    paragraphs: list[Any]
    signature: bytes | None


@cache
def _version_texts_stmt(which: str) -> Any:
    """The SELECT of one version of each of the stories ``ids`` (an expanding parameter), with its
    delivery's stored signature: the ``latest`` or the ``first``. Built once per process, like the
    statements above."""
    stmt = (select(StoryVersion.story_id, StoryVersion.version, StoryVersion.delivery_id, StoryVersion.title,
                   StoryVersion.paragraphs, Delivery.neardup_signature)
            .outerjoin(Delivery, Delivery.id == StoryVersion.delivery_id)
            .where(StoryVersion.story_id.in_(bindparam("ids", expanding=True))))
    if which == "latest":
        return stmt.join(Story, (Story.id == StoryVersion.story_id) & (Story.version == StoryVersion.version))
    return stmt.where(StoryVersion.version == 1)


def _version_texts(session: Session, story_ids: Iterable[int], which: str) -> dict[int, VersionText]:
    """One version of each story (see :func:`_version_texts_stmt`; one SELECT)."""
    ids = sorted(set(story_ids))
    if not ids:
        return {}
    rows = session.execute(_version_texts_stmt(which), {"ids": ids}).tuples()
    return {r[0]: VersionText(r[0], r[1], r[2], r[3], list(r[4]), r[5]) for r in rows}


def latest_versions(session: Session, story_ids: Iterable[int]) -> dict[int, VersionText]:
    """Each story's latest version with its delivery's stored signature (one SELECT)."""
    return _version_texts(session, story_ids, "latest")


def first_versions(session: Session, story_ids: Iterable[int]) -> dict[int, VersionText]:
    """Each story's first version with its delivery's stored signature (one SELECT)."""
    return _version_texts(session, story_ids, "first")


def lock_for_merge(session: Session, story_ids: Iterable[int]) -> dict[int, StoryState]:
    """``FOR UPDATE`` on stories about to be merged away (deleted), in id order: a concurrent
    transaction storing a delivery or a key that names one of them (a foreign-key share lock) is
    waited for, so its rows are moved with the others."""
    ids = sorted(set(story_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Story.id, Story.version, Story.published_at, Story.canonical_delivery_id)
        .where(Story.id.in_(ids)).order_by(Story.id).with_for_update()).tuples()
    return {r[0]: StoryState(*r) for r in rows}


def merge_into(session: Session, target: int, merged: Sequence[tuple[int, int, dict[str, Any] | None]],
               state: StoryChange, *, firsts: Sequence[str], link: str) -> None:
    """Merge stories into ``target``: for each (story id, version offset, changes of its first
    version), its versions become ``target``'s versions after ``offset`` (its version 1 recording
    ``changes``), and its keys and deliveries follow; then the merged stories go and ``target``
    takes ``state``. Locks as :func:`lock_for_merge`, by the caller.

    The deliveries that created the merged stories (``firsts``) made versions of ``target`` now:
    they become its ``update`` deliveries, ``duplicate_of`` the delivery that linked the stories
    (``link``), so that a story keeps exactly one ``new`` delivery.
    """
    conn = session.connection()
    session.execute(update(Delivery).where(Delivery.id.in_(list(firsts)), Delivery.status == "new")
                    .values(status="update", duplicate_of=link))
    params = [{"p_old": sid, "p_story": target, "p_offset": offset} for sid, offset, _ in merged]
    for model in (StoryVersion, SourceKey, Fingerprint, Delivery):
        table = _table(model)
        conn.execute(table.update().where(table.c.story_id == bindparam("p_old"))
                     .values(story_id=bindparam("p_story"), version=table.c.version + bindparam("p_offset")),
                     params)
    versions = _table(StoryVersion)
    conn.execute(versions.update().where(versions.c.story_id == bindparam("p_story"),
                                         versions.c.version == bindparam("p_version"))
                 .values(changes=bindparam("p_changes")),
                 [{"p_story": target, "p_version": offset + 1, "p_changes": changes}
                  for _sid, offset, changes in merged])
    update_stories(session, {target: state})
    session.execute(delete(Story).where(Story.id.in_([sid for sid, _, _ in merged])))
