"""Re-enrichment: stored stories enriched again by the current code and updated in place.

When enrichment improves (a new :data:`~worker.stages.enrich.ENRICHMENT_VERSION`),
``akhbar replay --from-db`` selects stored stories (:func:`select`: by default those enriched by
another version), publishes their ids in ``akhbar.reenrich`` messages on the bulk queue
(:func:`send`), and workers run :func:`reenrich_batch` on each message. Plain functions, no Celery:
the task in ``worker/tasks.py`` is a thin adapter, and tests and benchmarks call these directly.

Per story, the match forms are recomputed from the stored headline and paragraphs with the current
normalizer and enriched exactly as the ingest pipeline does, so a re-enriched story carries what a
fresh ingest of the same text would. The stored match forms and content hash stay as they are:
they are the story's exact-duplicate keys (its fingerprint row), and changing them is not
re-enrichment's business. Only ``enrichment``, ``enrichment_version``, ``language`` and (when
something a reader sees changed) ``updated_at`` are written; no delivery, story or version is ever
created.

Guarantees, per batch: one transaction, committed by the caller, holding the story rows locked
while they are re-enriched; one outcome record per story and run (see :mod:`models.reenrich`)
written in that transaction, so a redelivered message finds its stories done and does nothing
twice, and a run with no records at all (``run_id`` None) is still harmless to repeat, because a
story whose enrichment is already current is not written. A story the enrichment code fails on is
recorded as ``failed`` with the error, without holding back its neighbours; transient database
errors propagate so the task retries the whole batch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from models import reenrich as queries
from models.base import utcnow
from worker.messages import ReenrichBatch
from worker.pipeline import is_transient
from worker.quarantine import deadline
from worker.stages import enrich as enrich_stage
from worker.stages.normalize import match_form

if TYPE_CHECKING:
    from celery import Celery

TASK_NAME = "akhbar.reenrich"
# Stories per message. A message carries only ids; a batch of 100 takes about a quarter of a second
# (enrichment is ~1.5 ms a story), short enough to keep its rows locked and to share a run fairly
# between workers, long enough that the per-message and per-transaction costs stay small.
BATCH_SIZE = 100

log = structlog.get_logger("akhbar.reenrich")


@dataclass(slots=True)
class StoryOutcome:
    """What became of one story: updated | unchanged | failed | missing | already_processed."""

    story_id: int
    outcome: str
    changed: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    error: str | None = None


def select(session: Session, *, everything: bool = False, since: datetime | None = None,
           source: str | None = None) -> list[int]:
    """Ids of the stories a run re-enriches: those enriched by another version than the current one
    (every story with ``everything``), stored at or after ``since`` (``created_at``), of ``source``."""
    version = None if everything else enrich_stage.ENRICHMENT_VERSION
    return queries.select_story_ids(session, not_version=version, since=since, source=source)


def send(app: Celery, story_ids: Sequence[int], *, run_id: str, queue: str, batch_size: int = BATCH_SIZE,
         on_sent: Callable[[int], None] | None = None) -> int:
    """Publish ``story_ids`` as ``akhbar.reenrich`` messages of up to ``batch_size`` ids each on
    ``queue``; returns the number of messages, once the broker has accepted every one."""
    from producers.publish import RETRY_POLICY

    messages = 0
    for start in range(0, len(story_ids), batch_size):
        chunk = list(story_ids[start:start + batch_size])
        app.send_task(
            TASK_NAME, kwargs=ReenrichBatch(story_ids=chunk, run_id=run_id).model_dump(mode="json"),
            queue=queue, routing_key=queue, headers={"correlation_id": run_id},
            retry=True, retry_policy=RETRY_POLICY,
        )
        messages += 1
        if on_sent is not None:
            on_sent(len(chunk))
    return messages


def enrich_stored(story: queries.StoredStory) -> tuple[dict[str, Any], str | None]:
    """The current code's enrichment of a stored story, and the language to store with it.

    The same call as the ingest pipeline's enrich stage, on match forms recomputed from the stored
    headline and paragraphs (the paragraphs are what normalize split at ingest).
    """
    match_title = match_form(story.title or "")
    match_body = "\n".join(m for m in (match_form(p) for p in story.paragraphs) if m)
    enrichment = enrich_stage.enrich(
        title=story.title, body=story.body, paragraphs=story.paragraphs, match_title=match_title,
        match_body=match_body, published_at=story.published_at, language_hint=story.language_hint,
    )
    # Compared with what the database returns, so shaped as JSON gives it back (lists, not tuples).
    enrichment = orjson.loads(orjson.dumps(enrichment))
    return enrichment, enrichment.get("language") or story.language_hint


def changed_fields(old: dict[str, Any], new: dict[str, Any], *, old_language: str | None,
                   new_language: str | None) -> list[str]:
    """Enrichment fields whose value differs (the version stamp aside), and ``language`` when the
    story's language column changes."""
    changed = sorted(k for k in old.keys() | new.keys() if k != "version" and old.get(k) != new.get(k))
    if old_language != new_language and "language" not in changed:
        changed = sorted([*changed, "language"])
    return changed


def reenrich_batch(session: Session, batch: ReenrichBatch, *, time_limit: float = 0.0) -> list[StoryOutcome]:
    """Re-enrich every story of ``batch`` in ``session``'s open transaction; the caller commits.

    ``time_limit``: seconds one story's enrichment may take before it is recorded as failed (0: no
    limit; enforced where :func:`worker.quarantine.deadline` can, a process's main thread).
    ``duration_ms`` in each outcome is the story's own enrichment; the writes are one statement for
    the whole batch.
    """
    story_ids = list(dict.fromkeys(batch.story_ids))
    stories = {story.id: story for story in queries.lock_stories(session, story_ids)}
    done = queries.finished(session, batch.run_id, story_ids) if batch.run_id else set()
    version = enrich_stage.ENRICHMENT_VERSION
    outcomes: list[StoryOutcome] = []
    writes: dict[int, dict[str, Any]] = {}
    for story_id in story_ids:
        if story_id in done:
            outcomes.append(StoryOutcome(story_id, "already_processed"))
            continue
        story = stories.get(story_id)
        if story is None:
            outcomes.append(StoryOutcome(story_id, "missing"))
            continue
        start = time.perf_counter()
        outcome = StoryOutcome(story_id, "unchanged")
        try:
            with deadline(time_limit):
                enrichment, language = enrich_stored(story)
        except Exception as exc:
            if is_transient(exc):
                raise
            # A bug or a text the enrichment cannot handle: record it, keep the neighbours going.
            outcome.outcome, outcome.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            log.error("story_failed", stage="reenrich", story_id=story_id, error=repr(exc), exc_info=True)
        else:
            outcome.changed = changed_fields(story.enrichment, enrichment, old_language=story.language,
                                             new_language=language)
            if outcome.changed:
                outcome.outcome = "updated"
            stale = story.enrichment_version != version
            if stale or enrichment != story.enrichment or language != story.language:
                writes[story_id] = {
                    "id": story_id, "enrichment": enrichment, "enrichment_version": version,
                    "language": language,
                    # A new version stamp on an unchanged enrichment is not news to readers who sync
                    # by updated_at: it keeps its old value then.
                    "updated_at": utcnow() if outcome.changed else story.updated_at,
                }
        outcome.duration_ms = round((time.perf_counter() - start) * 1000, 3)
        outcomes.append(outcome)
    _write(session, writes, outcomes)
    if batch.run_id is not None:
        queries.record_outcomes(session, [
            {"run_id": batch.run_id, "story_id": o.story_id, "outcome": o.outcome, "changed": o.changed,
             "enrichment_version": version, "error": o.error}
            for o in outcomes if o.outcome != "already_processed"
        ])
    for o in outcomes:
        log.info("stage_completed", stage="reenrich", story_id=o.story_id, outcome=o.outcome,
                 duration_ms=o.duration_ms, changed=o.changed)
    return outcomes


def _write(session: Session, writes: dict[int, dict[str, Any]], outcomes: list[StoryOutcome]) -> None:
    """Update the stories in one statement; if the database refuses one of them, write them one by
    one, each in a savepoint, and record those it refuses as failed."""
    if not writes:
        return
    try:
        with session.begin_nested():
            queries.update_stories(session, list(writes.values()))
        return
    except StatementError as exc:
        if is_transient(exc):
            raise
        log.warning("reenrich_batch_write_refused", stories=len(writes), error=repr(exc)[:500])
    by_id = {o.story_id: o for o in outcomes}
    for story_id, values in writes.items():
        try:
            with session.begin_nested():
                queries.update_stories(session, [values])
        except StatementError as exc:
            if is_transient(exc):
                raise
            outcome = by_id[story_id]
            outcome.outcome, outcome.changed = "failed", []
            outcome.error = f"{type(exc).__name__}: {exc}"[:2000]


def record_failed(session: Session, batch: ReenrichBatch, error: str) -> int:
    """Record every story of ``batch`` not yet done in its run as failed (a batch that kept hitting
    transient errors, or hit an unexpected one), so the run that asked for it can end."""
    if batch.run_id is None:
        return 0
    story_ids = list(dict.fromkeys(batch.story_ids))
    done = queries.finished(session, batch.run_id, story_ids)
    rows = [{"run_id": batch.run_id, "story_id": sid, "outcome": "failed", "changed": [],
             "enrichment_version": enrich_stage.ENRICHMENT_VERSION, "error": error[:2000]}
            for sid in story_ids if sid not in done]
    queries.record_outcomes(session, rows)
    return len(rows)


def run_summary(session: Session, run_id: str, *, selected: int) -> dict[str, Any]:
    """What a run did so far: stories selected, by outcome, and per field how many stories changed."""
    counts = queries.outcome_counts(session, run_id)
    summary: dict[str, Any] = {"selected": selected}
    summary.update({outcome: counts.get(outcome, 0) for outcome in queries.REENRICH_OUTCOMES})
    summary["changed"] = queries.changed_fields(session, run_id)
    return summary


_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 date or date-time (UTC unless it says otherwise), or a span back
    from now: ``90m``, ``12h``, ``7d``, ``2w``."""
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date, a date-time or a span like 7d: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
