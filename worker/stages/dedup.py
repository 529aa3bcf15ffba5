"""Stage 2, dedup: is this delivery a story akhbar already has?

Exact duplicates are decided by the database: the first delivery to claim a (source, source id) or a
content hash (the SHA-256 of the match form) owns it; every later one is a ``duplicate`` of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from models import ingest as queries


@dataclass(frozen=True, slots=True)
class Match:
    """The stored delivery and story a duplicate was matched to, and by which key."""

    delivery_id: str
    story_id: int | None
    version: int
    key: str  # "source_id" | "content"


def exact(session: Session, *, source: str, source_id: str, content_hash: str,
          delivery_id: str) -> Match | None:
    """Claim both exact keys for ``delivery_id``; the first holder found makes this a duplicate.

    Both claims run inside the caller's savepoint, so a duplicate found on the content hash rolls back
    the source-key claim with everything else when the caller discards the savepoint.
    """
    holder = queries.claim_source_key(session, source, source_id, delivery_id)
    if holder is not None:
        return Match(holder.delivery_id, holder.story_id, holder.version, "source_id")
    holder = queries.claim_fingerprint(session, content_hash, delivery_id)
    if holder is not None:
        return Match(holder.delivery_id, holder.story_id, holder.version, "content")
    return None
