"""Near-duplicate stage: a delivery stored as a new story may be the same story as one stored before.

Runs after the exact-duplicate stage has stored a batch's new stories, in the same transaction,
following the protocol of :mod:`worker.neardup`: each new delivery's signature is stored with it,
its advisory lock taken, and the shared Redis index asked for candidates and given the delivery in
one atomic step. A candidate :func:`worker.neardup.compare` calls the same story turns the
delivery into a ``near_duplicate`` of it (joining its story at the story's current version) or an
``update`` (the story's next version, with the paragraphs added and removed), and the story the
delivery had created is folded into the matched one. Otherwise the delivery stays ``new``.

Groups are the connected components of the same-story relation. When the matches belong to several
stories, the delivery is the link between them: they are merged into the one whose canonical
delivery is earliest by (published_at, delivery id). The merged stories' versions follow that
story's own, story by story in canonical order (the first of each records what changed from the
version before it), their deliveries and exact-duplicate keys follow, and the story reads as its
last version. The delivery that created a merged story made a version of the merged one: it
becomes an ``update`` (``duplicate_of`` the linking delivery), so that every story keeps exactly
one ``new`` delivery. A story's canonical delivery is its member earliest by (published_at,
delivery id), whatever the order they arrived in. Of two same-story deliveries, the later one to
reach the index finds the other (lookup and insertion are one step) and waits for its
transaction, so the same input in any order and at any concurrency ends in the same groups, one
story each.

Locking: the stories a batch joins or merges are locked in one statement ordered by id
(``FOR NO KEY UPDATE``; those merged away then ``FOR UPDATE``, which waits for a concurrent
transaction storing a delivery that names them); a story merged away by a concurrent batch before
the lock is noticed (it is gone) and its deliveries' new story read again. A deadlock that remains
possible in that rare re-read is an :class:`OperationalError`, and the batch is retried.

SQL per batch: the signatures stored with one executemany (none when the caller wrote them in its
deliveries' INSERT, as the batch pipeline does), the advisory keys taken with one
statement each for the delivery's own keys and the candidates', one SELECT for the candidates'
stories, one to lock them, and the folds written at the end with a fixed number of executemany
statements; an update reads its story's latest version (one SELECT), a merge a handful more.

Plain functions, no Celery. The index is the shared Redis one, or in the embedded mode (no Redis)
the replaying process's own (:mod:`worker.neardup.local`, same bands and candidates). A NewsML-G2 /
NITF delivery also matches the stored versions of its guid from the same source (an ``update``,
whatever the text). Without an index the stage is skipped.
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
    CandidateIndex,
    IndexLost,
    RebuildInProgress,
    Signature,
    Verdict,
    compare_many,
    paragraph_diff,
    signature,
)
from worker.stages.normalize import match_form


class StoriesMoved(OperationalError):
    """The candidates' stories kept being merged away by concurrent batches: retry the batch."""

    def __init__(self) -> None:
        super().__init__("near-duplicate story lock", None, RuntimeError("stories merged concurrently"))


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
    signature: Signature | None = None  # computed by the stage when not given
    # The signature was written with the delivery's row (its INSERT), not to be stored again.
    signature_stored: bool = False
    # A wire story's guid (NewsML-G2 / NITF): its other versions are the same story, whatever the text.
    guid: str | None = None


@dataclass(slots=True)
class Decision:
    """What became of one item: ``new``, ``near_duplicate`` or ``update``."""

    status: str
    story_id: int
    version: int
    duplicate_of: str | None = None
    changes: dict[str, Any] | None = None
    duration_ms: float = 0.0


# The verdict for another version of the same wire guid: an update of that story, preferred over
# any text match.
SAME_GUID = Verdict(same_story=True, label="update", score=float("inf"), body=0.0, containment=0.0,
                    anchors=0.0, lede=0.0, title=0.0, hours_apart=None)


def ensure_index(session: Session, index: CandidateIndex | None, window_days: int) -> bool:
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


def sign(it: Item) -> Signature:
    """The item's near-duplicate signature (computed once)."""
    if it.signature is None:
        it.signature = signature(match_title=it.match_title, match_body=it.match_body,
                                 published_at=it.published_at, source=it.source)
    return it.signature


def apply(session: Session, index: CandidateIndex | None, items: Sequence[Item],
          moved: dict[int, int] | None = None, signed_ms: float = 0.0) -> dict[str, Decision]:
    """Decide each item (in order) against the stored stories; returns decisions by delivery id.

    Items decided ``near_duplicate`` or ``update`` have been folded into the matched story, and
    stories an item linked have been merged: each decision names the story its delivery ends in.
    ``moved``, when given, receives every story id that was folded or merged away (an item's own
    story, a stored story) and the story it ended in, so that the caller can point the batch's
    other deliveries (exact duplicates of them) at it. Signatures the caller computed (and wrote
    with the deliveries, ``signature_stored``) are not computed or stored again; ``signed_ms`` is
    the time that took, shared among the items' durations.
    Raises :class:`IndexUnavailable` when the index is lost or being rebuilt (the batch is retried).
    """
    if index is None or not items:
        return {}
    started = time.perf_counter()
    sigs = [sign(it) for it in items]
    queries.store_signatures(session, {it.delivery_id: s.to_bytes()
                                       for it, s in zip(items, sigs, strict=True) if not it.signature_stored})
    own = [it.delivery_id for it in items]
    queries.lock_for_indexing(session, own)
    try:
        found = index.lookup_and_add_many([(it.delivery_id, s) for it, s in zip(items, sigs, strict=True)])
    except (IndexLost, RebuildInProgress) as exc:
        raise IndexUnavailable(exc) from exc
    # Wait for the transactions still writing a candidate: its row becomes visible, or it never was.
    queries.wait_for(session, (c.ref for res in found for c in res.candidates), own=own)

    # The same-story verdicts are pure CPU: all of them first, then one read and one lock for the
    # stored stories they name.
    matches: list[list[tuple[str, Verdict]]] = []
    # Items are decided in order, each against the items before it only. The index gives that
    # (each lookup comes before the item's own insertion), except in a batch run again after its
    # transaction was lost (a deadlock, a lost connection): the index still holds what the lost
    # attempt added, its later items included, which are left out here as the first time.
    not_yet = {it.delivery_id for it in items}
    for it, sig, res in zip(items, sigs, found, strict=True):
        earlier = [cand for cand in res.candidates if cand.ref not in not_yet]  # not this item or later
        verdicts = compare_many([cand.signature for cand in earlier], sig)
        same = [(cand.ref, v) for cand, v in zip(earlier, verdicts, strict=True) if v.same_story]
        if it.guid:
            # The agency says it is the same story (a flash and the full story share a guid).
            versions = set(queries.same_guid_deliveries(session, it.source, it.guid)) - not_yet
            same = [(ref, v) for ref, v in same if ref not in versions]
            same += [(ref, SAME_GUID) for ref in sorted(versions)]
        not_yet.discard(it.delivery_id)
        matches.append(same)
    batch = _Batch(session, items)
    batch.load({ref for same in matches for ref, _ in same})
    shared_ms = ((time.perf_counter() - started) * 1000 + signed_ms) / len(items)

    decisions: dict[str, Decision] = {}
    for it, sig, same in zip(items, sigs, matches, strict=True):
        t0 = time.perf_counter()
        decision = batch.decide(it, sig, same)
        decision.duration_ms = round(shared_ms + (time.perf_counter() - t0) * 1000, 3)
        decisions[it.delivery_id] = decision
    batch.flush()
    for delivery_id, decision in decisions.items():
        decision.story_id = batch.find(decision.story_id)
        if delivery_id in batch.relabelled and decision.status == "new":
            # its story was merged into another by a later item of the batch
            decision.status, decision.duplicate_of, decision.version = batch.relabelled[delivery_id]
    if moved is not None:
        moved.update((old, batch.find(old)) for old in batch.redirect)
    return decisions


@dataclass(slots=True)
class _Text:
    """A version's text as versions are compared: match-form headline, signature, paragraphs."""

    match_title: str
    signature: Signature
    paragraphs: list[str]


def _version_text(v: queries.VersionText) -> _Text:
    paragraphs = [p for p in v.paragraphs if isinstance(p, str)]
    match_title = match_form(v.title or "")
    if v.signature is not None:
        sig = Signature.from_bytes(v.signature)
    else:  # a version stored before signatures were kept with deliveries
        match_body = "\n".join(m for m in map(match_form, paragraphs) if m)
        sig = signature(match_title=match_title, match_body=match_body, published_at=None, source="")
    return _Text(match_title, sig, paragraphs)


def _diff(old: _Text, new: _Text) -> dict[str, Any]:
    """What ``new`` changes in ``old``: paragraphs added and removed (their text as sent), and
    whether the headline changed."""
    added, removed = paragraph_diff(old.signature, new.signature, DEFAULT_THRESHOLDS.paragraph_bits)
    # The signature's paragraphs are the lines of the match form, which leaves out paragraphs whose
    # match form is empty: index the texts the same way.
    new_texts = [p for p in new.paragraphs if match_form(p)]
    old_texts = [p for p in old.paragraphs if match_form(p)]
    return {
        "paragraphs_added": [new_texts[i] for i in added if i < len(new_texts)],
        "paragraphs_removed": [old_texts[i] for i in removed if i < len(old_texts)],
        "title_changed": old.match_title != new.match_title,
    }


class _Batch:
    """The stories one batch's items join, in memory; written at the end (:meth:`flush`), or
    before a merge, which works on the database's rows."""

    def __init__(self, session: Session, items: Sequence[Item]) -> None:
        self.session = session
        self.story_of: dict[str, int] = {it.delivery_id: it.story_id for it in items}
        self.stories: dict[int, queries.StoryState] = {
            it.story_id: queries.StoryState(it.story_id, 1, it.published_at, it.delivery_id) for it in items}
        self.latest: dict[int, _Text] = {}  # latest text of the stories this batch created or updated
        self.redirect: dict[int, int] = {}  # story folded or merged -> the story it went into
        self.folds: list[queries.Fold] = []
        self.changed: dict[int, queries.StoryChange] = {}
        # deliveries that created a story merged into another: (status, duplicate_of, version)
        self.relabelled: dict[str, tuple[str, str, int]] = {}

    def find(self, story_id: int) -> int:
        while story_id in self.redirect:
            story_id = self.redirect[story_id]
        return story_id

    def load(self, refs: set[str]) -> None:
        """The stories of the stored candidates ``refs``, locked. A story merged away by a concurrent
        batch before the lock is gone from the result: its deliveries' story is read again."""
        stored = sorted(r for r in refs if r not in self.story_of)
        if not stored:
            return
        holders = queries.candidate_holders(self.session, stored)
        for _attempt in range(8):
            need = {s for s in holders.values() if s not in self.stories}
            if not need:
                break
            locked = queries.lock_stories(self.session, need)
            self.stories.update(locked)
            if len(locked) == len(need):
                break
            holders = queries.candidate_holders(self.session, stored)
        else:
            raise StoriesMoved()
        self.story_of.update(holders)

    def decide(self, it: Item, sig: Signature, same: list[tuple[str, Verdict]]) -> Decision:
        own = self.find(it.story_id)
        self.latest[own] = _Text(it.match_title, sig, it.paragraphs)
        found = [(ref, v, self.find(self.story_of[ref])) for ref, v in same if ref in self.story_of]
        found = [m for m in found if m[2] != own]
        if not found:
            return Decision("new", own, 1)
        story_ids = {s for _, _, s in found}
        target = min(story_ids, key=lambda s: self.stories[s].canonical_key())
        if len(story_ids) > 1:
            self.merge(target, story_ids - {target}, it.delivery_id)
        ref, verdict, _ = max(found, key=lambda m: (m[1].score, m[0]))
        state = self.stories[target]
        change = self.changed.get(target) or queries.StoryChange(state.version, state.canonical_delivery_id,
                                                                 state.canonical_at)
        if queries.sort_key(it.published_at, it.delivery_id) < state.canonical_key():
            state.canonical_at, state.canonical_delivery_id = it.published_at, it.delivery_id
            change.canonical_delivery_id, change.published_at = it.delivery_id, it.published_at
            self.changed[target] = change
        changes = None
        if verdict.label == "update":
            changes = _diff(self.latest_text(target), self.latest[own])
            state.version += 1
            change.version, change.text_from = state.version, it.story_id
            self.changed[target] = change
            self.latest[target] = self.latest[own]
        status = "update" if changes is not None else "near_duplicate"
        self.folds.append(queries.Fold(it.delivery_id, it.story_id, target, state.version, status, ref,
                                       changes))
        self.redirect[own] = target
        return Decision(status, target, state.version, ref, changes)

    def latest_text(self, story_id: int) -> _Text:
        if story_id not in self.latest:
            stored = queries.latest_versions(self.session, [story_id])[story_id]
            self.latest[story_id] = _version_text(stored)
        return self.latest[story_id]

    def merge(self, target: int, others: set[int], link: str) -> None:
        """Merge ``others`` into ``target`` in the database (after writing the batch's folds);
        ``link`` is the delivery that matched them all."""
        self.flush()
        queries.lock_for_merge(self.session, others)
        ordered = sorted(others, key=lambda s: self.stories[s].canonical_key())
        firsts = queries.first_versions(self.session, ordered)
        state = self.stories[target]
        previous = self.latest_text(target)
        offset = state.version
        merged: list[tuple[int, int, dict[str, Any] | None]] = []
        for sid in ordered:
            first = _version_text(firsts[sid])
            changes = _diff(previous, first) | {"merged_from": sid}
            merged.append((sid, offset, changes))
            self.relabelled[firsts[sid].delivery_id] = ("update", link, offset + 1)
            offset += self.stories[sid].version
            previous = self.latest_text(sid)
        earliest = min((self.stories[s] for s in (target, *ordered)), key=lambda st: st.canonical_key())
        state.version = offset
        state.canonical_at = earliest.canonical_at
        state.canonical_delivery_id = earliest.canonical_delivery_id
        queries.merge_into(self.session, target, merged, queries.StoryChange(
            offset, earliest.canonical_delivery_id, earliest.canonical_at, text_from=ordered[-1]),
            firsts=[firsts[sid].delivery_id for sid in ordered], link=link)
        self.latest[target] = previous
        for sid in ordered:
            self.redirect[sid] = target

    def flush(self) -> None:
        queries.apply_folds(self.session, self.folds, self.changed)
        self.folds, self.changed = [], {}
