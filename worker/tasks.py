"""Celery tasks: thin adapters that parse the message, open the unit of work and call the pipeline.

``akhbar.ingest`` guarantees: idempotent (a redelivered or retried message stores nothing twice:
delivery ids are primary keys and every key claim is an ON CONFLICT insert); deliveries committed
before the message is acknowledged (acks_late), and the message requeued if its process dies or
hits the hard time limit; every attempt at a delivery leaves an execution record, and a delivery
that crashed, hung or failed ``max_attempts`` times is quarantined as ``rejected`` with a reason
and traceback (``worker/quarantine.py``), its neighbours unharmed; transient errors (database or
broker away) are retried with exponential backoff and jitter up to ``max_transient_retries``, then
what is left is quarantined as ``retries_exhausted``; a batch that lost to a concurrent one (a
deadlock, a story merged away meanwhile) is retried at once the first time. Messages of unknown
tasks or content types are refused (and logged) before anything runs.
"""

from __future__ import annotations

import base64
import contextlib
import faulthandler
import gc
import os
import signal
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    setup_logging,
    task_rejected,
    task_unknown,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from pydantic import ValidationError

from models.session import dispose_inherited, session_factory
from worker import failpoints, guards, pipeline, quarantine, reenrich
from worker.messages import Delivery, DeliveryMessage, IngestBatch, ReenrichBatch, Rejection, new_delivery_id
from worker.neardup import CandidateIndex

log = structlog.get_logger("akhbar.tasks")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging itself.
    from akhbar.logging import configure_logging
    from akhbar.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


# The process that warmed up before forking its pool (see _warm_before_fork), inherited by the pool.
_WARMED_IN: int | None = None


@worker_init.connect
def _warm_before_fork(**_: Any) -> None:
    # Build the gazetteer and language model once in the main process: every pool child forked
    # from it, including the replacement of a child that crashed or was killed, starts warm (the
    # pages are shared copy-on-write) instead of spending seconds building them again.
    global _WARMED_IN
    from sqlalchemy.engine import make_url

    from akhbar.settings import get_settings
    from models.session import normalize_url
    from worker import precompute
    from worker.stages.enrich import warm

    settings = get_settings()
    # Marks that pool processes of this machine left when they died with their worker node (the
    # node was killed whole): in Redis before this node takes a message, so a redelivered one
    # finds the delivery its lost run died on.
    quarantine.sweep_running_marks(settings)
    # Modules a pool process would otherwise import in its first batch, which after a crash holds
    # the crashed batch's mates: the database driver (psycopg, 150 to 200 ms of CPU; the main
    # process never connects) and what numpy.unique loads on first use (numpy.ma, 50 to 150 ms).
    with contextlib.suppress(Exception):  # a bad URL is reported where it is used, as before
        make_url(normalize_url(settings.database_url)).get_dialect().import_dbapi()
    quarantine.redis_client_options()
    precompute.prepare()
    _warm_database(settings)
    # What the rehearsal left (compiled SQL, configured mappers) is frozen out of the collector too.
    warm()
    _WARMED_IN = os.getpid()


# Two batches for the rehearsal in _warm_database, each delivery through its own SQL: the first
# stores two stories and a rejected record and finds an exact duplicate; the second finds a stored
# story again by its source key, stores a new version of it, and a rewrite of the other.
_WARM_PARAGRAPHS = (
    "الرياض (واس) - افتتحت وزارة الصحة اليوم الأحد 12 مارس 2023 مستشفى جديدا في مدينة جدة بسعة 300 "
    "سرير، ضمن خطة تطوير الخدمات الصحية في المملكة العربية السعودية.",
    "وقال المتحدث الرسمي باسم الوزارة إن المستشفى يضم أقساما للقلب والأورام والأطفال، وإن العمل فيه "
    "يبدأ خلال الأشهر المقبلة بعد استكمال التجهيزات الطبية وتدريب الكوادر.",
    "وأضاف أن الوزارة تنفذ مشاريع مماثلة في الدمام والمدينة المنورة وأبها بالتعاون مع القطاع الخاص، "
    "وأن تكلفة المشاريع تبلغ نحو ملياري ريال.",
)
_WARM_OTHER = (
    "القاهرة - أ ش أ - قال البنك المركزي المصري اليوم إن احتياطي النقد الأجنبي ارتفع إلى 34 مليار دولار "
    "في نهاية فبراير، مقابل 33 مليار دولار في نهاية يناير.",
    "وأوضح البنك في بيان أن الزيادة جاءت بدعم من تحويلات المصريين العاملين في الخارج وإيرادات السياحة "
    "وقناة السويس خلال الشهر الماضي.",
)


def _warm_up_batches() -> list[IngestBatch]:
    tag = uuid.uuid4().hex  # the rehearsal's keys are its own: it never meets a stored story
    at = datetime(2023, 3, 12, 9, 0, tzinfo=UTC)

    def record(source_id: str, title: str, paragraphs: tuple[str, ...],
               source: str = "warm-up") -> DeliveryMessage:
        return DeliveryMessage(
            delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id=f"warm-up-{tag}",
            record=Delivery(id=f"{tag}-{source_id}", source=source, title=f"{title} {tag}",
                            body="\n".join(paragraphs), published_at=at))

    hospital, bank = "افتتاح مستشفى جديد في جدة", "ارتفاع احتياطي النقد الأجنبي في مصر"
    rejected = DeliveryMessage(
        delivery_id=new_delivery_id(), received_at=datetime.now(UTC), correlation_id=f"warm-up-{tag}",
        rejected=Rejection.of("invalid_json", "rehearsal", source="warm-up", raw=b"{"))
    more = "وأشار إلى أن المستشفى الجديد يخدم أكثر من مليون نسمة في محافظة جدة."
    return [
        IngestBatch(deliveries=[record("1", hospital, _WARM_PARAGRAPHS),
                                record("1", hospital, _WARM_PARAGRAPHS, source="warm-up-copy"),
                                record("2", bank, _WARM_OTHER), rejected]),
        IngestBatch(deliveries=[record("1", hospital, _WARM_PARAGRAPHS),
                                record("3", hospital, (*_WARM_PARAGRAPHS, more)),
                                record("4", bank, (_WARM_OTHER[0],), source="warm-up-copy")]),
    ]


def _warm_database(settings: Any) -> None:
    """Rehearse two ingest batches in the main process and roll them back, before the pool forks.

    A pool process takes over this process's engine (``models.session.get_engine``), so every pool
    process, a replacement forked after a crash included, starts with the dialect initialized, the
    SQL of a batch compiled and the ORM mappers configured; each used to pay for that again in its
    first batch (about 50 ms of CPU out of its 150). The rehearsal runs the task's own path (the
    guards, the attempt runner, the pipeline) on batches of made-up deliveries with keys of their
    own, in one transaction that is rolled back, with the near-duplicate index in memory and no
    running marks: nothing of it is stored, in the database or in Redis. Then the connection is
    closed, so no pool process inherits it. A database that is away, or not migrated yet, only
    skips the rehearsal: pool processes then connect and compile for themselves, as before.
    """
    from sqlalchemy import event
    from sqlalchemy.orm import sessionmaker

    from models.session import get_engine
    from worker.neardup.local import LocalNearDupIndex

    if settings.database_url.startswith("sqlite"):
        return  # the embedded mode runs in its own process: there is no pool to fork

    def _connect_timeout(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("connect_timeout", 5)  # a database host that does not answer

    engine = get_engine(settings.database_url)
    event.listen(engine, "do_connect", _connect_timeout)
    started = time.perf_counter()
    try:
        with engine.connect() as conn, conn.begin() as outer, \
                structlog.contextvars.bound_contextvars(warm_up=True):
            # Never wait on a running batch's locks: the rehearsal is only worth a few ms.
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            conn.exec_driver_sql("SET LOCAL statement_timeout = '10s'")
            index = LocalNearDupIndex(settings.neardup_window_days)
            index.ensure()
            # Every transaction of the task (each runner's own) a savepoint inside this one.
            sessions = sessionmaker(bind=conn, join_transaction_mode="create_savepoint",
                                    expire_on_commit=False)
            for batch in _warm_up_batches():
                runner = quarantine.AttemptRunner(
                    sessions, quarantine.Attempt(task_id=f"warm-up-{uuid.uuid4()}", attempt=0,
                                                 worker=socket.gethostname(), pid=os.getpid()),
                    max_attempts=settings.max_attempts, delivery_time_limit=settings.delivery_time_limit,
                    neardup_index=index, neardup_window_days=settings.neardup_window_days,
                )
                runner.begin(guards.check_batch(batch, settings))
                runner.run_batch()
            outer.rollback()
    except Exception as exc:
        log.warning("warm_up_skipped", error=repr(exc)[:300])
    else:
        log.info("warm_up_done", duration_ms=round((time.perf_counter() - started) * 1000, 1))
    finally:
        event.remove(engine, "do_connect", _connect_timeout)
        # Close this process's connections: a pool process must never share one.
        engine.dispose()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _remove_mark_file(**_: Any) -> None:
    # A process that exits cleanly was running nothing: its mark file has nothing to tell.
    quarantine.close_running_marks()


@worker_process_init.connect
def _fresh_engine_per_process(**_: Any) -> None:
    # `kill -USR2 <pool child>` writes the child's Python stacks to stderr: what a stuck child is
    # doing, without a debugger (SIGUSR1 is the soft time limit in pool children).
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    # A forked pool child must not reuse the parent's database connections.
    dispose_inherited()
    if _WARMED_IN is None:
        # Build the gazetteer and language model now, not on the first story.
        from worker.stages.enrich import warm

        warm()
    else:
        # Warmed before the fork: only what the main process made since (the pool, the consumer)
        # is frozen out of the collector, without collecting or trimming again (2 ms a process).
        gc.freeze()


class AkhbarTask(Task):  # type: ignore[misc]
    """Base task: the delivery contract shared by every akhbar task."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # A message whose worker died is requeued at the front of its queue (worker/requeue.py).
    Request = "worker.requeue:FrontRequeueRequest"
    # Retries are decided in the task body, only for errors pipeline.is_transient() names.
    max_retries = None
    typing = False

    @property
    def settings(self) -> Any:
        return self.app.akhbar_settings

    def backoff(self, exc: BaseException) -> int:
        """Seconds before the retry of a batch that raised ``exc`` (see :func:`retry_countdown`)."""
        return retry_countdown(exc, retries=self.request.retries, cap=self.settings.retry_backoff_max)


def retry_countdown(exc: BaseException, *, retries: int, cap: int) -> int:
    """Seconds before a failed batch runs again.

    A batch that lost to a concurrent one (:func:`worker.pipeline.is_conflict`) runs again at once
    the first time: the other transaction has ended. Any other transient error (the database or the
    network away), and a conflict on a message retried before, waits an exponential backoff with
    full jitter, capped (AWS architecture blog's "full jitter"): batches that keep colliding are
    spread apart rather than run against each other again and again.
    """
    import random

    if retries == 0 and pipeline.is_conflict(exc):
        return 0
    return int(random.uniform(0, min(cap, 2 ** (retries + 1))))


def _quarantine_invalid_message(settings: Any, task_id: str, kwargs: dict[str, Any],
                                exc: ValidationError) -> None:
    raw = orjson.dumps(kwargs, default=str)
    # The same id on every redelivery of the message, so it is recorded once.
    delivery_id = str(uuid.uuid5(_INVALID_NAMESPACE, task_id)) if task_id else new_delivery_id()
    msg = DeliveryMessage(
        delivery_id=delivery_id, received_at=datetime.now(UTC), correlation_id="invalid-message",
        rejected=Rejection(code="invalid_message", message=str(exc)[:2000], source="unknown",
                           raw_b64=base64.b64encode(raw[:settings.max_delivery_bytes]).decode()),
    )
    with session_factory(settings.database_url, write=True).begin() as session:
        pipeline.process_one(session, msg)


_INVALID_NAMESPACE = uuid.UUID("5b0c1b0e-7a3c-4f3e-9d7e-3c1f0a1d2e4b")


def ingest(self: AkhbarTask, **kwargs: Any) -> dict[str, int]:
    """Ingest one micro-batch of deliveries (see the module docstring for the guarantees)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=self.request.id, worker=socket.gethostname(),
                                           pid=os.getpid())
    settings = self.settings
    try:
        batch = IngestBatch.model_validate(kwargs)
    except ValidationError as exc:
        log.error("message_invalid", error=str(exc)[:500])
        _quarantine_invalid_message(settings, self.request.id or "", kwargs, exc)
        return {"rejected": 1}
    batch = guards.check_batch(batch, settings)
    runner = quarantine.AttemptRunner(
        session_factory(settings.database_url, write=True),
        quarantine.Attempt(task_id=self.request.id or "", attempt=self.request.retries,
                           worker=self.request.hostname or socket.gethostname(), pid=os.getpid()),
        max_attempts=settings.max_attempts, delivery_time_limit=settings.delivery_time_limit,
        propagate=(SoftTimeLimitExceeded,),
        before=lambda msg: failpoints.poison(settings, msg),
        neardup_index=_neardup_index(settings), neardup_window_days=settings.neardup_window_days,
        marks=quarantine.running_marks(settings),
        first_time_limit=quarantine.RECENT.limit(settings.delivery_time_limit,
                                                 floor=settings.first_attempt_time_limit,
                                                 factor=settings.first_attempt_time_factor),
        times=quarantine.RECENT, stall_limit=settings.first_attempt_stall_limit,
    )
    try:
        plan = runner.begin(batch)
        quarantined = runner.quarantine_poison()
        result = runner.run_isolated() if plan.isolated else runner.run_batch()
    except (SoftTimeLimitExceeded, quarantine.DeliveryTimeout) as exc:
        # Charge the delivery that was running; the others are retried now, one at a time.
        runner.fail_current("timeout")
        log.warning("batch_retry", attempt=self.request.retries + 1, countdown=0, error=repr(exc))
        raise self.retry(exc=exc, countdown=0) from exc
    except Exception as exc:
        transient = pipeline.is_transient(exc)
        runner.fail_current("retry" if transient else "error")
        if self.request.retries >= settings.max_transient_retries:
            return _give_up(runner, settings, exc)
        countdown = self.backoff(exc) if transient else 1
        log.warning("batch_retry", attempt=self.request.retries + 1, countdown=countdown, error=repr(exc),
                    transient=transient, exc_info=not transient)
        raise self.retry(exc=exc, countdown=countdown) from exc
    result.quarantined, result.skipped = quarantined, plan.skipped
    counts = result.counts()
    log.info("batch_committed", deliveries=len(result.outcomes), isolated=plan.isolated, **counts)
    if result.failed or result.deferred:
        # Deliveries that timed out or raised get another attempt (or quarantine, at the limit),
        # as do suspects deferred; everything else of the batch is committed and will be skipped.
        # The retry waits behind every message not known to hold a poison (SUSPECT_PRIORITY).
        raise self.retry(countdown=1, priority=quarantine.SUSPECT_PRIORITY)
    return counts


# One index per process and deployment: the database (embedded) or the Redis server and key prefix.
_NEARDUP: dict[tuple[int, str], Any] = {}


def _neardup_index(settings: Any) -> CandidateIndex:
    """This process's near-duplicate index (built on first use, after the fork): the shared one in
    Redis, or without Redis (the embedded mode) one in this process's memory, per database.

    Either is absent at first (a new deployment, Redis lost it, or a new process): the first batch
    rebuilds it from the signatures stored in the database, an empty set or not."""
    embedded = settings.redis_url is None
    deployment = (settings.database_url if embedded
                  else f"{settings.redis_url.get_secret_value()} {settings.redis_prefix}")
    key = (os.getpid(), deployment)
    if key not in _NEARDUP:
        from worker.neardup import NearDupIndex
        from worker.neardup.local import LocalNearDupIndex

        index: CandidateIndex
        if embedded:
            index = LocalNearDupIndex(settings.neardup_window_days)
        else:
            import redis

            client = redis.Redis.from_url(settings.redis_url.get_secret_value(),
                                          **quarantine.redis_client_options())
            index = NearDupIndex(client, settings.redis_prefix, settings.neardup_window_days)
        # Indexes of another process (inherited through a fork) are not this one's.
        for stale in [k for k in _NEARDUP if k[0] != key[0]]:
            del _NEARDUP[stale]
        _NEARDUP[key] = index
    return _NEARDUP[key]


def _give_up(runner: quarantine.AttemptRunner, settings: Any, exc: BaseException) -> dict[str, int]:
    """Retries exhausted: quarantine what is left, if the database lets us. If it does not, the
    message is acknowledged anyway (retrying forever would block the queue) and the deliveries
    stay in the publish ledger unsettled, for the reconciler to publish again."""
    log.error("batch_retries_exhausted", attempts=settings.max_transient_retries + 1, error=repr(exc))
    if runner.plan is None:
        log.error("quarantine_failed", error="the attempt never started")
        return {"failed": 1}
    try:
        stored = runner.quarantine_rest("retries_exhausted", f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as quarantine_exc:
        log.error("quarantine_failed", error=repr(quarantine_exc),
                  deliveries=[d.delivery_id for d in runner.plan.todo])
        return {"failed": len(runner.plan.todo)}
    return {"rejected": stored}


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
            outcomes = reenrich.reenrich_batch(session, batch, time_limit=settings.delivery_time_limit)
    except Exception as exc:
        if pipeline.is_transient(exc):
            if self.request.retries < settings.max_transient_retries:
                countdown = self.backoff(exc)
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


@task_unknown.connect
def _refused_unknown(message: Any = None, name: str | None = None, id: str | None = None,
                     **_: Any) -> None:
    # Celery rejects (drops) a message naming a task this worker does not have, before decoding it.
    log.error("message_refused", reason="unknown_task", task=name, message_id=id,
              content_type=getattr(message, "content_type", None))


@task_rejected.connect
def _refused_rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    # A content type outside accept_content (pickle, yaml, ...) or a malformed task message:
    # rejected before its body is decoded, so nothing in it runs.
    headers = getattr(message, "headers", None) or {}
    log.error("message_refused", reason=type(exc).__name__ if exc else "unknown_format",
              task=headers.get("task") if isinstance(headers, dict) else None,
              message_id=headers.get("id") if isinstance(headers, dict) else None,
              content_type=getattr(message, "content_type", None), error=str(exc)[:300] if exc else None)


def register_tasks(app: Celery) -> None:
    """Register akhbar's tasks on ``app`` under their explicit dotted names."""
    # early_ack exists only to show the fault tier can see loss (see worker/failpoints.py).
    acks_late = not failpoints.enabled(app.akhbar_settings, "early_ack")  # type: ignore[attr-defined]
    app.task(name="akhbar.ingest", base=AkhbarTask, bind=True, shared=False, acks_late=acks_late)(ingest)
    app.task(name=reenrich.TASK_NAME, base=AkhbarTask, bind=True, shared=False)(reenrich_stories)
