"""The pipeline: one micro-batch of deliveries through normalize -> dedup -> enrich -> persist.

Plain functions, no Celery: the task in ``worker/tasks.py`` is a thin adapter around
:func:`process_batch`, and tests and benchmarks call it directly.

Guarantees, per batch: one database transaction, committed by the caller; each delivery runs in its
own SAVEPOINT, so one bad delivery is recorded as ``rejected`` (with its traceback) without failing
or delaying its neighbours; a delivery already committed (a redelivered message) is skipped, so
running a batch twice stores nothing twice. Transient database errors propagate, and the whole
batch is retried.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from models import ingest as queries
from worker.messages import DeliveryMessage, IngestBatch
from worker.stages import dedup
from worker.stages import enrich as enrich_stage
from worker.stages import normalize as normalize_stage

PIPELINE_VERSION = "1"

log = structlog.get_logger("akhbar.pipeline")

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the whole batch for: the database or the network went away."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(slots=True)
class Outcome:
    delivery_id: str
    status: str  # new | duplicate | near_duplicate | update | rejected | already_processed
    story_id: int | None = None
    duplicate_of: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)


def _timed(outcome: Outcome, stage: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    start = time.perf_counter()
    try:
        return fn(**kwargs)
    finally:
        outcome.stage_ms[stage] = round((time.perf_counter() - start) * 1000, 3)


def _stage_log(outcome: Outcome, stage: str, result: str) -> None:
    log.info("stage_completed", stage=stage, outcome=result, duration_ms=outcome.stage_ms.get(stage, 0.0),
             story_id=outcome.story_id)


def store_rejected(session: Session, msg: DeliveryMessage, *, code: str, message: str,
                    raw: bytes | None, tb: str | None = None) -> bool:
    error: dict[str, Any] = {"code": code, "message": message}
    if tb:
        error["traceback"] = tb
    record = msg.record
    return queries.insert_delivery(
        session, id=msg.delivery_id, source=msg.source,
        source_id=record.id if record else msg.rejected.source_id,  # type: ignore[union-attr]
        format=record.format if record else msg.rejected.format,  # type: ignore[union-attr]
        run_id=msg.run_id, correlation_id=msg.correlation_id, received_at=msg.received_at,
        status="rejected", title=record.title if record else None, body=record.body if record else None,
        record=_record_fields(msg), raw=raw, error=error,
    )


def _record_fields(msg: DeliveryMessage) -> dict[str, Any] | None:
    record = msg.record
    if record is None:
        return None
    return {
        "url": record.url,
        "published_at": record.published_at.isoformat() if record.published_at else None,
        "language": record.language,
        "extra": record.extra,
    }


def process_one(session: Session, msg: DeliveryMessage, *,
                propagate: tuple[type[BaseException], ...] = ()) -> Outcome:
    """Run one delivery through the stages inside a savepoint of ``session``'s transaction.

    An error of a ``propagate`` type (a time limit) is not the delivery's verdict: it is raised to
    the caller, which counts the attempt, instead of quarantining the delivery on the spot.
    """
    outcome = Outcome(delivery_id=msg.delivery_id, status="rejected")
    if msg.rejected is not None:
        with session.begin_nested():
            _timed(outcome, "persist", store_rejected, session=session, msg=msg, code=msg.rejected.code,
                   message=msg.rejected.message, raw=msg.rejected.raw)
        _stage_log(outcome, "persist", "rejected")
        return outcome
    try:
        with session.begin_nested() as savepoint:
            result = _process_record(session, msg, outcome)
            if result is None:
                savepoint.rollback()
                outcome.status = "already_processed"
            return outcome
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, propagate):
            raise
        # A bug or an input the stages cannot handle: quarantine this delivery, keep its neighbours.
        log.error("delivery_failed", stage=_failed_stage(outcome), error=repr(exc), exc_info=True)
        outcome.status, outcome.story_id = "rejected", None
        with session.begin_nested():
            store_rejected(session, msg, code="processing_error", message=f"{type(exc).__name__}: {exc}",
                            raw=None, tb=traceback.format_exc(limit=20))
        return outcome


def _failed_stage(outcome: Outcome) -> str:
    for stage in ("normalize", "dedup", "enrich", "persist"):
        if stage not in outcome.stage_ms:
            return stage
    return "persist"


def _process_record(session: Session, msg: DeliveryMessage, outcome: Outcome) -> Outcome | None:
    record = msg.record
    assert record is not None
    norm = _timed(outcome, "normalize", normalize_stage.normalize, title=record.title, body=record.body,
                  format=record.format)
    _stage_log(outcome, "normalize", "ok")

    match = _timed(outcome, "dedup", dedup.exact, session=session, source=record.source, source_id=record.id,
                   content_hash=norm.content_hash, delivery_id=msg.delivery_id)
    common = dict(
        id=msg.delivery_id, source=record.source, source_id=record.id, format=record.format,
        run_id=msg.run_id, correlation_id=msg.correlation_id, received_at=msg.received_at,
        content_hash=norm.content_hash, title=record.title, body=record.body, record=_record_fields(msg),
    )
    if match is not None:
        outcome.status, outcome.story_id, outcome.duplicate_of = "duplicate", match.story_id, match.delivery_id
        _stage_log(outcome, "dedup", f"duplicate_by_{match.key}")
        if match.key == "content" and match.story_id is not None:
            queries.attach_keys(session, source=record.source, source_id=record.id, content_hash=None,
                                story_id=match.story_id, version=match.version)
        stored = _timed(outcome, "persist", queries.insert_delivery, session=session, status="duplicate",
                        story_id=match.story_id, version=match.version, duplicate_of=match.delivery_id,
                        **common)
        _stage_log(outcome, "persist", "duplicate" if stored else "already_processed")
        return outcome if stored else None
    _stage_log(outcome, "dedup", "new")

    enrichment = _timed(outcome, "enrich", enrich_stage.enrich, title=record.title, body=record.body,
                        paragraphs=norm.paragraphs, match_title=norm.match_title, match_body=norm.match_body,
                        published_at=record.published_at, language_hint=record.language)
    _stage_log(outcome, "enrich", "ok")

    def persist() -> bool:
        story = queries.create_story(
            session, canonical_delivery_id=msg.delivery_id, source=record.source, source_id=record.id,
            title=record.title, body=record.body, paragraphs=norm.paragraphs,
            normalized_title=norm.match_title, normalized_body=norm.match_body,
            content_hash=norm.content_hash, url=record.url, published_at=record.published_at,
            language=enrichment.get("language") or record.language, enrichment=enrichment,
            enrichment_version=enrich_stage.ENRICHMENT_VERSION, pipeline_version=PIPELINE_VERSION,
        )
        outcome.story_id = story.id
        queries.attach_keys(session, source=record.source, source_id=record.id,
                            content_hash=norm.content_hash, story_id=story.id, version=1)
        return queries.insert_delivery(session, status="new", story_id=story.id, version=1, **common)

    stored = _timed(outcome, "persist", persist)
    outcome.status = "new"
    _stage_log(outcome, "persist", "new" if stored else "already_processed")
    return outcome if stored else None


def process_batch(session: Session, batch: IngestBatch, *,
                  propagate: tuple[type[BaseException], ...] = ()) -> list[Outcome]:
    """Run every delivery of ``batch`` in ``session``'s open transaction; the caller commits.

    ``propagate`` as in :func:`process_one`.
    """
    done = queries.processed_deliveries(session, (d.delivery_id for d in batch.deliveries))
    outcomes: list[Outcome] = []
    for msg in batch.deliveries:
        with structlog.contextvars.bound_contextvars(delivery_id=msg.delivery_id,
                                                     correlation_id=msg.correlation_id, source=msg.source):
            if msg.delivery_id in done:
                log.info("delivery_skipped", outcome="already_processed", status=done[msg.delivery_id])
                outcomes.append(Outcome(msg.delivery_id, "already_processed"))
                continue
            outcomes.append(process_one(session, msg, propagate=propagate))
    return outcomes
