"""Celery tasks: thin adapters that parse the message, open the unit of work and call the pipeline.

``akhbar.ingest`` guarantees: idempotent (a redelivered or retried message stores nothing twice:
delivery ids are primary keys and every key claim is an ON CONFLICT insert); one transaction per
message, committed before the message is acknowledged (acks_late); transient database errors are
retried with exponential backoff and jitter up to ``max_attempts``, then the batch's deliveries are
quarantined as ``rejected`` with reason ``retries_exhausted``.
"""

from __future__ import annotations

import base64
import os
import socket
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from celery import Celery, Task
from celery.signals import setup_logging, worker_process_init
from pydantic import ValidationError

from models import ingest as queries
from models.session import dispose_inherited, session_factory
from worker import pipeline, reenrich
from worker.messages import DeliveryMessage, IngestBatch, ReenrichBatch, Rejection, new_delivery_id

log = structlog.get_logger("akhbar.tasks")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging itself.
    from akhbar.logging import configure_logging
    from akhbar.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_process_init.connect
def _fresh_engine_per_process(**_: Any) -> None:
    # A forked pool child must not reuse the parent's database connections.
    dispose_inherited()
    # Build the gazetteer and language model now, not on the first story.
    from worker.stages.enrich import warm

    warm()


class AkhbarTask(Task):  # type: ignore[misc]
    """Base task: the delivery contract shared by every akhbar task."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Retries are decided in the task body, only for errors pipeline.is_transient() names.
    max_retries = None
    typing = False

    @property
    def settings(self) -> Any:
        return self.app.akhbar_settings

    def backoff(self) -> int:
        """Exponential backoff with full jitter, capped (AWS architecture blog's 'full jitter')."""
        import random

        cap = self.settings.retry_backoff_max
        return int(random.uniform(0, min(cap, 2 ** (self.request.retries + 1))))


def _quarantine_invalid_message(settings: Any, kwargs: dict[str, Any], exc: ValidationError) -> None:
    raw = orjson.dumps(kwargs, default=str)
    msg = DeliveryMessage(
        delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id="invalid-message",
        rejected=Rejection(code="invalid_message", message=str(exc)[:2000], source="unknown",
                           raw_b64=base64.b64encode(raw).decode()),
    )
    with session_factory(settings.database_url, write=True).begin() as session:
        pipeline.process_one(session, msg)


def ingest(self: AkhbarTask, **kwargs: Any) -> dict[str, int]:
    """Ingest one micro-batch of deliveries (see the module docstring for the guarantees)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=self.request.id, worker=socket.gethostname(), pid=os.getpid())
    settings = self.settings
    try:
        batch = IngestBatch.model_validate(kwargs)
    except ValidationError as exc:
        log.error("message_invalid", error=str(exc)[:500])
        _quarantine_invalid_message(settings, kwargs, exc)
        return {"rejected": 1}
    try:
        with session_factory(settings.database_url, write=True).begin() as session:
            outcomes = pipeline.process_batch(session, batch)
    except Exception as exc:
        if not pipeline.is_transient(exc):
            raise
        attempt = self.request.retries + 1
        if attempt >= settings.max_attempts:
            log.error("batch_retries_exhausted", attempts=attempt, error=repr(exc))
            _quarantine_batch(settings, batch, f"{type(exc).__name__}: {exc}")
            return {"rejected": len(batch.deliveries)}
        countdown = self.backoff()
        log.warning("batch_retry", attempt=attempt, countdown=countdown, error=repr(exc))
        raise self.retry(exc=exc, countdown=countdown) from exc
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    log.info("batch_committed", deliveries=len(outcomes), **counts)
    return counts


def _quarantine_batch(settings: Any, batch: IngestBatch, reason: str) -> None:
    """Record every delivery of a batch that kept failing as rejected, if the database lets us."""
    try:
        with session_factory(settings.database_url, write=True).begin() as session:
            done = queries.processed_deliveries(session, (d.delivery_id for d in batch.deliveries))
            for msg in batch.deliveries:
                if msg.delivery_id in done:
                    continue
                with session.begin_nested():
                    pipeline.store_rejected(session, msg, code="retries_exhausted", message=reason, raw=None)
    except Exception as exc:  # the database is still down: the reconciler re-publishes these later
        log.error("quarantine_failed", error=repr(exc), deliveries=[d.delivery_id for d in batch.deliveries])


def reenrich_stories(self: AkhbarTask, **kwargs: Any) -> dict[str, int]:
    """Enrich stored stories again and update them in place (``akhbar replay --from-db``).

    Guarantees: never creates a delivery, a story or a version; idempotent (a redelivered message
    finds its stories' outcome records and does nothing twice; a story already current is never
    written); one transaction per message, committed before the message is acknowledged
    (acks_late); transient database errors retried with backoff and jitter up to
    ``max_transient_retries``; after that, or on an unexpected error, the batch's unfinished
    stories are recorded as failed, so the run waiting for them ends and reports them.
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=self.request.id, worker=socket.gethostname(),
                                           pid=os.getpid())
    settings = self.settings
    try:
        batch = ReenrichBatch.model_validate(kwargs)
    except ValidationError as exc:
        # No valid story ids or run to record it against: the log line is the record.
        log.error("message_invalid", stage="reenrich", error=str(exc)[:500])
        return {"invalid": 1}
    structlog.contextvars.bind_contextvars(run_id=batch.run_id, correlation_id=batch.run_id)
    try:
        with session_factory(settings.database_url, write=True).begin() as session:
            outcomes = reenrich.reenrich_batch(session, batch)
    except Exception as exc:
        if pipeline.is_transient(exc):
            if self.request.retries < settings.max_transient_retries:
                countdown = self.backoff()
                log.warning("batch_retry", stage="reenrich", attempt=self.request.retries + 1,
                            countdown=countdown, error=repr(exc))
                raise self.retry(exc=exc, countdown=countdown) from exc
            log.error("batch_retries_exhausted", stage="reenrich", attempts=self.request.retries + 1,
                      error=repr(exc))
        else:
            log.error("batch_failed", stage="reenrich", error=repr(exc), exc_info=True)
        try:
            with session_factory(settings.database_url, write=True).begin() as session:
                failed = reenrich.record_failed(session, batch, f"{type(exc).__name__}: {exc}")
        except Exception as record_exc:  # the database is still away: the run reports a timeout
            log.error("reenrich_record_failed", error=repr(record_exc), story_ids=batch.story_ids)
            failed = len(batch.story_ids)
        return {"failed": failed}
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    log.info("batch_committed", stage="reenrich", stories=len(outcomes), **counts)
    return counts


def register_tasks(app: Celery) -> None:
    """Register akhbar's tasks on ``app`` under their explicit dotted names."""
    app.task(name="akhbar.ingest", base=AkhbarTask, bind=True, shared=False)(ingest)
    app.task(name=reenrich.TASK_NAME, base=AkhbarTask, bind=True, shared=False)(reenrich_stories)
