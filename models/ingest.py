"""Queries of the ingest path: idempotent claims of exact-duplicate keys, and the writes of a story.

Every function takes an open session and leaves transaction boundaries to the caller (the task
commits once per micro-batch; each delivery runs in its own SAVEPOINT). The database's unique keys
are the authority on duplicates: a claim is an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so
of two workers racing on the same key exactly one wins, and the other waits for the winner's commit
and then reads the winner's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, tuple_, update
from sqlalchemy.orm import Session

from models import bulk
from models.base import insert_for, utcnow
from models.delivery import Delivery
from models.story import Fingerprint, SourceKey, Story, StoryVersion


@dataclass(frozen=True, slots=True)
class Holder:
    """Who already holds a key: the delivery that claimed it and the story it belongs to."""

    delivery_id: str
    story_id: int | None
    version: int


def processed_deliveries(session: Session, delivery_ids: Iterable[str]) -> dict[str, str]:
    """Status of each of ``delivery_ids`` already committed (a redelivered message)."""
    ids = list(delivery_ids)
    if not ids:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        conn = _connection(session)
        found = conn.exec_driver_sql("SELECT id, status FROM deliveries WHERE id = ANY(%(ids)b::varchar[])",
                                     {"ids": ids})
        return dict(found.tuples().all())
    rows = session.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids)))
    return dict(rows.tuples().all())


def claim_source_key(session: Session, source: str, source_id: str, delivery_id: str) -> Holder | None:
    """Claim (source, source_id) for ``delivery_id``; None if claimed, else the earlier holder."""
    insert = insert_for(session)
    stmt = (
        insert(SourceKey)
        .values(source=source, source_id=source_id, delivery_id=delivery_id, story_id=None)
        .on_conflict_do_nothing(index_elements=["source", "source_id"])
        .returning(SourceKey.source)
    )
    if session.execute(stmt).first() is not None:
        return None
    row = session.execute(
        select(SourceKey.delivery_id, SourceKey.story_id, SourceKey.version).where(
            SourceKey.source == source, SourceKey.source_id == source_id
        )
    ).one()
    return Holder(row.delivery_id, row.story_id, row.version)


def claim_fingerprint(session: Session, content_hash: str, delivery_id: str) -> Holder | None:
    """Claim a content hash for ``delivery_id``; None if claimed, else the earlier holder."""
    insert = insert_for(session)
    stmt = (
        insert(Fingerprint)
        .values(content_hash=content_hash, delivery_id=delivery_id, story_id=None)
        .on_conflict_do_nothing(index_elements=["content_hash"])
        .returning(Fingerprint.content_hash)
    )
    if session.execute(stmt).first() is not None:
        return None
    row = session.execute(
        select(Fingerprint.delivery_id, Fingerprint.story_id, Fingerprint.version).where(
            Fingerprint.content_hash == content_hash
        )
    ).one()
    return Holder(row.delivery_id, row.story_id, row.version)


def attach_keys(session: Session, *, source: str, source_id: str, content_hash: str | None,
                story_id: int, version: int) -> None:
    """Point the keys this delivery claimed at the story it ended in."""
    session.execute(
        update(SourceKey)
        .where(SourceKey.source == source, SourceKey.source_id == source_id)
        .values(story_id=story_id, version=version)
    )
    if content_hash is not None:
        session.execute(
            update(Fingerprint)
            .where(Fingerprint.content_hash == content_hash)
            .values(story_id=story_id, version=version)
        )


def create_story(session: Session, **values: Any) -> Story:
    """Insert a new story with its first version; returns it with its id assigned."""
    story = Story(version=1, **values)
    session.add(story)
    session.flush()
    session.add(StoryVersion(story_id=story.id, version=1, delivery_id=values["canonical_delivery_id"],
                             title=values["title"], body=values["body"], paragraphs=values["paragraphs"],
                             content_hash=values["content_hash"], changes=None))
    return story


def insert_delivery(session: Session, **values: Any) -> bool:
    """Record a delivery's outcome; False if the delivery was already recorded (a concurrent
    redelivery won), in which case the caller rolls back its savepoint."""
    insert = insert_for(session)
    values.setdefault("processed_at", utcnow())
    stmt = (insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=["id"])
            .returning(Delivery.id))
    return session.execute(stmt).first() is not None


def status_counts(session: Session, run_id: str) -> dict[str, int]:
    """Deliveries of one replay run committed so far, by status."""
    from sqlalchemy import func

    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
    )
    return {status: int(count) for status, count in rows.tuples()}


def story_by_id(session: Session, story_id: int) -> Story | None:
    return session.get(Story, story_id)




# --- micro-batch forms: a handful of statements per batch instead of several per delivery ---------


def _connection(session: Session) -> Connection:
    """The session's connection, after flushing pending ORM changes (as an ORM statement would)."""
    session.flush()
    return session.connection()


def key_holders(session: Session, source_keys: Iterable[tuple[str, str]],
                content_hashes: Iterable[str]) -> tuple[dict[tuple[str, str], Holder], dict[str, Holder]]:
    """Who already holds each of ``source_keys`` and ``content_hashes`` (two SELECTs)."""
    keys = sorted(set(source_keys))
    hashes = sorted(set(content_hashes))
    by_key: dict[tuple[str, str], Holder] = {}
    by_hash: dict[str, Holder] = {}
    conn = _connection(session)
    if conn.dialect.name == "postgresql" and (keys or hashes):
        # Both tables in one round trip, the keys as arrays (one statement text for any batch).
        rows = conn.exec_driver_sql(_HOLDERS_SQL, {
            "s": [s for s, _ in keys], "i": [i for _, i in keys], "h": hashes})
        for kind, key, source_id, delivery_id, story_id, version in rows:
            if kind == "k":
                by_key[(key, source_id)] = Holder(delivery_id, story_id, version)
            else:
                by_hash[key] = Holder(delivery_id, story_id, version)
        return by_key, by_hash
    if keys:
        rows = conn.execute(
            select(_SK.c.source, _SK.c.source_id, _SK.c.delivery_id, _SK.c.story_id, _SK.c.version)
            .where(tuple_(_SK.c.source, _SK.c.source_id).in_(keys))
        )
        for source, source_id, delivery_id, story_id, version in rows:
            by_key[(source, source_id)] = Holder(delivery_id, story_id, version)
    if hashes:
        rows = conn.execute(
            select(_FP.c.content_hash, _FP.c.delivery_id, _FP.c.story_id, _FP.c.version)
            .where(_FP.c.content_hash.in_(hashes))
        )
        for content_hash, delivery_id, story_id, version in rows:
            by_hash[content_hash] = Holder(delivery_id, story_id, version)
    return by_key, by_hash


# One index probe per key, whatever the planner knows of the tables: a LATERAL subquery with a LIMIT
# is never flattened into a join, so a new database's tables, which have no statistics until
# autovacuum's first ANALYZE, are never read whole for a batch's keys (a hash join over a
# sequential scan, whose cost grows with every story stored). Each key is unique, hence LIMIT 1.
_HOLDERS_SQL = (
    "SELECT 'k', u.source, u.source_id, k.delivery_id, k.story_id, k.version"
    " FROM unnest(%(s)b::varchar[], %(i)b::varchar[]) AS u(source, source_id)"
    " CROSS JOIN LATERAL (SELECT x.delivery_id, x.story_id, x.version FROM source_keys x"
    " WHERE x.source = u.source AND x.source_id = u.source_id LIMIT 1) AS k"
    " UNION ALL"
    " SELECT 'h', u.content_hash, NULL, f.delivery_id, f.story_id, f.version"
    " FROM unnest(%(h)b::varchar[]) AS u(content_hash)"
    " CROSS JOIN LATERAL (SELECT x.delivery_id, x.story_id, x.version FROM fingerprints x"
    " WHERE x.content_hash = u.content_hash LIMIT 1) AS f"
)


# The batch statements run on the session's connection as Core statements on the tables: the ORM's
# bulk-insert layer (per-row mapper bookkeeping, identity handling) adds nothing to rows that are
# never loaded as objects in this transaction, and cost about as much CPU as the driver itself.
_SK = cast(Table, SourceKey.__table__)
_FP = cast(Table, Fingerprint.__table__)
_STORY = cast(Table, Story.__table__)
_VERSION = cast(Table, StoryVersion.__table__)
_DELIVERY = cast(Table, Delivery.__table__)


StoryRef = tuple[int | None, int]


def claim_source_keys(session: Session, claims: Iterable[tuple[str, str, str]], *,
                      stories: Mapping[tuple[str, str], StoryRef] | None = None) -> set[tuple[str, str]]:
    """Claim each (source, source_id) for its delivery id in one statement; returns the keys won.

    ``stories`` gives the (story id, version) a key points at once claimed (default: none yet,
    version 1), so that a key of a story created beforehand needs no UPDATE afterwards.
    Rows go in key order, so two batches claiming overlapping keys lock them in the same order
    and cannot deadlock on each other; a key held by a transaction still running is waited for.
    """
    ordered = sorted(claims)
    refs = [(stories or {}).get((s, i), (None, 1)) for s, i, _ in ordered]
    return {(source, source_id) for source, source_id in _claim(session, _SK, ("source", "source_id"),
                                                                 ordered, refs)}


def claim_fingerprints(session: Session, claims: Iterable[tuple[str, str]], *,
                       stories: Mapping[str, StoryRef] | None = None) -> set[str]:
    """Claim each content hash for its delivery id in one statement; returns the hashes won.
    ``stories`` as in :func:`claim_source_keys`."""
    ordered = sorted(claims)
    refs = [(stories or {}).get(h, (None, 1)) for h, _ in ordered]
    return {content_hash for (content_hash,) in _claim(session, _FP, ("content_hash",), ordered, refs)}


def _claim(session: Session, table: Table, key: tuple[str, ...], claims: Sequence[tuple[str, ...]],
           refs: Sequence[StoryRef]) -> Iterable[tuple[Any, ...]]:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` of the claims (the key's columns, then the
    delivery id) in their order, pointing at ``refs``; the keys of the rows inserted."""
    if not claims:
        return []
    names = (*key, "delivery_id")
    conn = _connection(session)
    if conn.dialect.name == "postgresql":
        columns: dict[str, Sequence[Any]] = dict(zip(names, zip(*claims, strict=True), strict=True))
        columns |= {"story_id": [story for story, _ in refs], "version": [version for _, version in refs]}
        return bulk.insert_columns(conn, table, columns, conflict=key, returning=key).tuples()
    rows = [dict(zip(names, claim, strict=True), story_id=story, version=version)
            for claim, (story, version) in zip(claims, refs, strict=True)]
    stmt = (insert_for(session)(table).on_conflict_do_nothing(index_elements=list(key))
            .returning(*(table.c[name] for name in key)))
    return conn.execute(stmt, rows).tuples()


def delete_stories(session: Session, story_ids: Iterable[int]) -> None:
    """Delete stories this transaction created and no key or delivery points at (their versions
    go with them): the stories of deliveries that lost a key claim to a concurrent batch."""
    ids = sorted(set(story_ids))
    if ids:
        _connection(session).execute(_STORY.delete().where(_STORY.c.id.in_(ids)))


def create_stories(session: Session, stories: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new stories (each with its first version); returns story ids by canonical delivery id."""
    if not stories:
        return {}
    conn = _connection(session)
    if conn.dialect.name == "postgresql":
        return _create_stories_pg(conn, stories)
    rows = [{"version": 1, "withdrawn": False, **values} for values in stories]
    stmt = insert(_STORY).returning(_STORY.c.canonical_delivery_id, _STORY.c.id)
    ids: dict[str, int] = dict(conn.execute(stmt, rows).tuples().all())
    conn.execute(insert(_VERSION), [
        {"story_id": ids[v["canonical_delivery_id"]], "version": 1, "delivery_id": v["canonical_delivery_id"],
         "title": v["title"], "body": v["body"], "paragraphs": v["paragraphs"],
         "content_hash": v["content_hash"], "changes": None}
        for v in stories
    ])
    return ids


STORY_COLUMNS = ("canonical_delivery_id", "source", "source_id", "title", "body", "paragraphs",
                 "normalized_title", "normalized_body", "content_hash", "url", "published_at", "language",
                 "enrichment", "enrichment_version", "pipeline_version")


def _create_stories_pg(conn: Connection, stories: list[dict[str, Any]]) -> dict[str, int]:
    """:func:`create_stories` on PostgreSQL: one INSERT over unnest per table."""
    n = len(stories)
    now = utcnow()
    columns: dict[str, Any] = {c: [v[c] for v in stories] for c in STORY_COLUMNS}
    columns |= {"version": [1] * n, "withdrawn": [False] * n, "created_at": [now] * n,
                "updated_at": [now] * n}
    ids: dict[str, int] = dict(bulk.insert_columns(
        conn, _STORY, columns, returning=("canonical_delivery_id", "id")).tuples().all())
    # The first versions' text is copied from the story rows just written, in the server: sent
    # once, and the paragraphs' JSON serialized and parsed once. Story ids ascend in the order
    # the rows were given, so the versions go in that order too. ``changes`` is the JSON null, as
    # the JSON type writes None.
    conn.exec_driver_sql(_FIRST_VERSIONS_SQL, {"ids": sorted(ids.values())})
    return ids


_FIRST_VERSIONS_SQL = (
    "INSERT INTO story_versions (story_id, version, delivery_id, title, body, paragraphs, content_hash,"
    " changes, created_at)"
    " SELECT id, 1, canonical_delivery_id, title, body, paragraphs, content_hash, 'null'::jsonb, created_at"
    " FROM stories WHERE id = ANY(%(ids)s::int[]) ORDER BY id")


def attach_keys_many(session: Session, source_keys: list[tuple[str, str, int | None, int]],
                     fingerprints: list[tuple[str, int, int]]) -> None:
    """Point claimed keys at their stories: (source, source_id, story_id, version) and
    (content_hash, story_id, version), one UPDATE per table.

    On PostgreSQL each is one statement over ``unnest`` of the values, not one UPDATE per key; the
    keys are ones this transaction claimed, so it holds their row locks already.
    """
    conn = _connection(session)
    # One row per key, the last of the sorted list winning, as a sequence of UPDATEs would leave it.
    source_keys = [(s, i, story, v) for (s, i), (story, v) in
                   {(s, i): (story, v) for s, i, story, v in sorted(source_keys)}.items()]
    fingerprints = [(h, story, v) for h, (story, v) in
                    {h: (story, v) for h, story, v in sorted(fingerprints)}.items()]
    if conn.dialect.name == "postgresql":
        if source_keys:
            s, i, story, v = zip(*sorted(source_keys), strict=True)
            conn.exec_driver_sql(
                "UPDATE source_keys SET story_id = k.story_id, version = k.version"
                " FROM unnest(%(s)b::varchar[], %(i)b::varchar[], %(story)b::int[], %(v)b::int[])"
                " AS k(source, source_id, story_id, version)"
                " WHERE source_keys.source = k.source AND source_keys.source_id = k.source_id",
                {"s": list(s), "i": list(i), "story": list(story), "v": list(v)})
        if fingerprints:
            h, story, v = zip(*sorted(fingerprints), strict=True)
            conn.exec_driver_sql(
                "UPDATE fingerprints SET story_id = k.story_id, version = k.version"
                " FROM unnest(%(h)b::varchar[], %(story)b::int[], %(v)b::int[])"
                " AS k(content_hash, story_id, version)"
                " WHERE fingerprints.content_hash = k.content_hash",
                {"h": list(h), "story": list(story), "v": list(v)})
        return
    if source_keys:
        stmt = (update(_SK)
                .where(_SK.c.source == bindparam("k_source"), _SK.c.source_id == bindparam("k_source_id"))
                .values(story_id=bindparam("k_story_id"), version=bindparam("k_version")))
        conn.execute(stmt, [
            {"k_source": s, "k_source_id": i, "k_story_id": story, "k_version": v}
            for s, i, story, v in sorted(source_keys)
        ])
    if fingerprints:
        stmt = (update(_FP).where(_FP.c.content_hash == bindparam("k_hash"))
                .values(story_id=bindparam("k_story_id"), version=bindparam("k_version")))
        conn.execute(stmt, [
            {"k_hash": h, "k_story_id": story, "k_version": v} for h, story, v in sorted(fingerprints)
        ])


DELIVERY_COLUMNS = ("id", "source", "source_id", "format", "run_id", "correlation_id", "received_at",
                    "processed_at", "status", "story_id", "version", "duplicate_of", "content_hash", "title",
                    "body", "record", "raw", "error", "neardup_signature")


def insert_deliveries(session: Session, deliveries: list[dict[str, Any]]) -> set[str]:
    """Record many deliveries' outcomes in one statement; returns the ids actually inserted (an id
    missing was recorded already, by a concurrent redelivery)."""
    if not deliveries:
        return set()
    now = utcnow()
    conn = _connection(session)
    if conn.dialect.name == "postgresql":
        columns = {c: [values.get(c) for values in deliveries] for c in DELIVERY_COLUMNS}
        columns["processed_at"] = [at or now for at in columns["processed_at"]]
        columns["attempts"] = [1] * len(deliveries)
        result = bulk.insert_columns(conn, _DELIVERY, columns, conflict=("id",), returning=("id",))
        return set(result.scalars())
    # executemany needs the same keys in every row
    rows = [{c: values.get(c) for c in DELIVERY_COLUMNS} | {"processed_at": values.get("processed_at") or now}
            for values in deliveries]
    stmt = (insert_for(session)(_DELIVERY).on_conflict_do_nothing(index_elements=["id"])
            .returning(_DELIVERY.c.id))
    return set(conn.execute(stmt, rows).scalars())


def guid_versions_pattern(guid: str) -> str:
    """A LIKE pattern (escape ``\\``) for the source ids ``guid:version`` of a wire story's versions."""
    return guid.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"


def mark_withdrawn(session: Session, *, source: str, guid: str, story_ids: Iterable[int]) -> list[int]:
    """Mark every stored story of a wire guid (ids ``guid:version``) withdrawn; returns their ids.

    Withdrawal is sticky: a story an agency canceled or withheld is kept, but never shown as usable
    again by a later delivery.
    """
    pattern = guid_versions_pattern(guid)
    ids = set(story_ids) | {
        story_id for story_id in session.scalars(
            select(SourceKey.story_id).where(
                SourceKey.source == source, SourceKey.source_id.like(pattern, escape="\\"),
                SourceKey.story_id.is_not(None),
            )
        )
        if story_id is not None
    }
    if ids:
        session.execute(update(Story).where(Story.id.in_(sorted(ids))).values(withdrawn=True))
    return sorted(ids)
