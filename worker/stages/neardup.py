"""Near-duplicate stage: a delivery stored as a new story may be the same story as one stored before.

Runs after the exact-duplicate stage has stored a batch's new stories, in the same transaction,
following the protocol of :mod:`worker.neardup`: each new delivery's signature is stored with it,
its advisory lock taken, and the shared Redis index asked for candidates and given the delivery in
one atomic step. A candidate :func:`worker.neardup.compare` calls the same story turns the
delivery into a ``near_duplicate`` of it (joining its story at the story's current version) or an
``update`` (the story's next version, with the paragraphs added and removed), and the story the
delivery had created is folded into the matched one. Otherwise the delivery stays ``new``.

When the matches belong to several stories, the delivery joins the one whose canonical delivery
is earliest by (published_at, delivery id); the stories themselves are not merged.

Plain functions, no Celery. Without an index (the embedded mode, no Redis) the stage is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models import neardup as queries
from worker.neardup import (
    DEFAULT_THRESHOLDS,
    IndexLost,
    NearDupIndex,
    RebuildInProgress,
    Signature,
    compare,
    paragraph_diff,
    signature,
)
from worker.stages.normalize import match_form


class IndexUnavailable(OperationalError):
    """The near-duplicate index is being rebuilt, or was lost mid-batch: retry the batch.

    An :class:`OperationalError`, so the pipeline treats it as transient like a lost connection.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__("near-duplicate index lookup", None, cause)


@dataclass(slots=True)
class Item:
    """A delivery just stored as a new story, with what the stage needs of it."""

    delivery_id: str
    story_id: int
    source: str
    title: str | None
    body: str
    paragraphs: list[str]
    match_title: str
    match_body: str
    content_hash: str
    published_at: datetime | None


@dataclass(slots=True)
class Decision:
    """What became of one item: ``new``, ``near_duplicate`` or ``update``."""

    status: str
    story_id: int
    version: int
    duplicate_of: str | None = None
    changes: dict[str, Any] | None = None
    duration_ms: float = 0.0


def ensure_index(session: Session, index: NearDupIndex | None, window_days: int) -> bool:
    """Rebuild the index from the stored signatures if Redis has lost it; True if rebuilt.

    Call before the batch's transaction writes anything: the rebuild runs in its own transaction
    and takes the rebuild lock exclusively, waiting for every transaction that is indexing.
    """
    if index is None or index.present():
        return False
    with Session(bind=session.get_bind()) as own:
        queries.lock_rebuild(own)
        if index.present():
            return False
        since = queries.rebuild_since(window_days, datetime.now(UTC))
        try:
            index.rebuild((ref, Signature.from_bytes(data))  # type: ignore[arg-type]
                          for ref, data in queries.stored_signatures(own, since))
        except RebuildInProgress as exc:
            raise IndexUnavailable(exc) from exc
        own.commit()
    return True


def apply(session: Session, index: NearDupIndex | None, items: Sequence[Item]) -> dict[str, Decision]:
    """Decide each item (in order) against the stored stories; returns decisions by delivery id.

    Items decided ``near_duplicate`` or ``update`` have been folded into the matched story.
    Raises :class:`IndexUnavailable` when the index is lost or being rebuilt (the batch is retried).
    """
    if index is None or not items:
        return {}
    started = time.perf_counter()
    sigs = [signature(match_title=it.match_title, match_body=it.match_body, published_at=it.published_at,
                      source=it.source) for it in items]
    queries.store_signatures(session, {it.delivery_id: s.to_bytes()
                                       for it, s in zip(items, sigs, strict=True)})
    own = [it.delivery_id for it in items]
    queries.lock_for_indexing(session, own)
    try:
        found = index.lookup_and_add_many([(it.delivery_id, s) for it, s in zip(items, sigs, strict=True)])
    except (IndexLost, RebuildInProgress) as exc:
        raise IndexUnavailable(exc) from exc
    # Wait for the transactions still writing a candidate: its row becomes visible, or it never was.
    queries.wait_for(session, (c.ref for res in found for c in res.candidates), own=own)
    shared_ms = (time.perf_counter() - started) * 1000 / len(items)

    decisions: dict[str, Decision] = {}
    for it, sig, res in zip(items, sigs, found, strict=True):
        t0 = time.perf_counter()
        decision = _decide(session, it, sig, res.candidates)
        decision.duration_ms = round(shared_ms + (time.perf_counter() - t0) * 1000, 3)
        decisions[it.delivery_id] = decision
    return decisions


def _decide(session: Session, it: Item, sig: Signature, candidates: Sequence[Any]) -> Decision:
    # Holders are read per item, after the earlier items of the batch were folded into their stories.
    holders = queries.candidate_holders(session, (c.ref for c in candidates))
    matches = []
    for cand in candidates:
        holder = holders.get(cand.ref)
        if holder is None or holder.story_id == it.story_id:
            continue
        verdict = compare(cand.signature, sig)
        if verdict.same_story:
            matches.append((holder, cand, verdict))
    if not matches:
        return Decision("new", it.story_id, 1)
    # Several stories: the one whose canonical delivery is earliest by (published_at, delivery id).
    far_future = datetime.max.replace(tzinfo=UTC)

    def canonical(h: queries.Holder) -> tuple[datetime, str]:
        at = h.canonical_at
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return (at or far_future, h.canonical_delivery_id)

    target = min((h for h, _, _ in matches), key=canonical)
    holder, _cand, verdict = max((m for m in matches if m[0].story_id == target.story_id),
                                 key=lambda m: (m[2].score, m[0].delivery_id))
    if verdict.label != "update":
        version = queries.join_story(session, delivery_id=it.delivery_id, own_story_id=it.story_id,
                                     story_id=holder.story_id, status="near_duplicate",
                                     duplicate_of=holder.delivery_id)
        return Decision("near_duplicate", holder.story_id, version, holder.delivery_id)
    changes = _changes(session, it, sig, holder.story_id)
    version = queries.join_story(
        session, delivery_id=it.delivery_id, own_story_id=it.story_id, story_id=holder.story_id,
        status="update", duplicate_of=holder.delivery_id,
        new_version=dict(title=it.title, body=it.body, paragraphs=it.paragraphs,
                         normalized_title=it.match_title, normalized_body=it.match_body,
                         content_hash=it.content_hash, changes=changes))
    return Decision("update", holder.story_id, version, holder.delivery_id, changes)


def _changes(session: Session, it: Item, sig: Signature, story_id: int) -> dict[str, Any]:
    """What the update changes in the story's latest version: paragraphs added and removed (their
    text as sent), and whether the headline changed."""
    stored = queries.story_text(session, story_id)
    assert stored is not None
    old_title, old_body, old_paragraphs, old_at, old_source = stored
    old_sig = signature(match_title=old_title, match_body=old_body, published_at=old_at, source=old_source)
    added, removed = paragraph_diff(old_sig, sig, DEFAULT_THRESHOLDS.paragraph_bits)
    # The signature's paragraphs are the lines of the match form, which leaves out paragraphs whose
    # match form is empty: index the texts the same way.
    new_texts = [p for p in it.paragraphs if match_form(p)]
    old_texts = [p for p in old_paragraphs if isinstance(p, str) and match_form(p)]
    return {
        "paragraphs_added": [new_texts[i] for i in added if i < len(new_texts)],
        "paragraphs_removed": [old_texts[i] for i in removed if i < len(old_texts)],
        "title_changed": old_title != it.match_title,
    }
