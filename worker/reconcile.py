"""Reconciliation: publish again every delivery the ledger has and the store does not; and
retention: delete the ledger rows and execution records no longer needed (:func:`prune`).

The publish ledger (``models/ledger.py``) records each delivery before it is published. A ledger
row older than the grace period whose delivery is not committed is either still on its way (queued,
being processed, waiting for a retry) or lost (popped by a worker that died before the broker
recorded it as unacknowledged, held by a Redis that restarted without persistence, dropped by a
producer that died between the ledger write and the publish). Reconciliation tells the two apart
by looking in the broker: a delivery whose message (task id) is neither queued nor unacknowledged
there is lost, and is published again from the copy in the ledger. Committed deliveries are marked
settled and never looked at again.

Publishing a delivery twice is harmless (delivery ids are primary keys; the second copy is skipped),
so every doubt is resolved toward publishing: at-least-once delivery, effectively-once storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog

from akhbar.settings import Settings
from models import ledger
from models.base import utcnow
from models.session import session_factory
from worker.messages import DeliveryMessage

log = structlog.get_logger("akhbar.reconcile")

# Messages read from Redis per round trip while listing what the broker holds.
_SCAN_CHUNK = 200


@dataclass(slots=True)
class Report:
    """What one reconciliation pass found and did."""

    checked: int = 0
    settled: int = 0
    in_flight: int = 0
    republished: int = 0
    messages: int = 0
    seconds: float = 0.0
    republished_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["republished_ids"]
        return out


def _task_id(raw: bytes) -> str | None:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    # The unacknowledged hash stores [message, exchange, routing_key]; queues store the message.
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers") or {}
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


# kombu's Redis transport keeps a queue's messages of priority p > 0 in a list of their own,
# "<queue>\x06\x16<p>" (its PRIORITY_STEPS and Channel.sep); retries of suspect deliveries are sent
# with a priority (worker/quarantine.py, SUSPECT_PRIORITY).
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"


def _priority_lists(*queues: str) -> list[str]:
    return [q if step == 0 else f"{q}{_PRIORITY_SEP}{step}" for q in queues for step in _PRIORITY_STEPS]


def broker_task_ids(settings: Settings, client: Any | None = None) -> set[str]:
    """Task ids of every message the broker holds: queued on akhbar's queues (each priority's
    list) or unacknowledged.

    Read in chunks (LRANGE, HSCAN) so a long backlog never has to fit in one reply.
    """
    import redis

    own = client is None
    if client is None:
        assert settings.redis_url is not None
        client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    prefix = f"{settings.redis_prefix}:"
    ids: set[str] = set()
    try:
        for key in [prefix + q for q in _priority_lists(settings.queue_live, settings.queue_bulk)]:
            start = 0
            while True:
                chunk = client.lrange(key, start, start + _SCAN_CHUNK - 1)
                ids.update(t for t in map(_task_id, chunk) if t)
                if len(chunk) < _SCAN_CHUNK:
                    break
                start += _SCAN_CHUNK
        for _tag, raw in client.hscan_iter(prefix + "unacked", count=_SCAN_CHUNK):
            task_id = _task_id(raw)
            if task_id:
                ids.add(task_id)
    finally:
        if own:
            client.close()
    return ids


def _chunks(items: list[ledger.Unsettled], size: int) -> Iterator[list[ledger.Unsettled]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def reconcile_once(settings: Settings, publisher: Any, *, grace: float | None = None,
                   in_broker: Callable[[], set[str]] | None = None) -> Report:
    """One pass: settle what was committed, publish again what was lost.

    ``in_broker`` lists the task ids the broker holds (:func:`broker_task_ids` by default; in
    embedded mode the queue lives in the caller's process, and the caller says what it holds).
    """
    started = time.perf_counter()
    grace = settings.reconcile_grace if grace is None else grace
    report = Report()
    sessions = session_factory(settings.database_url, write=True)
    cutoff = utcnow() - timedelta(seconds=grace)
    after: tuple[datetime, str] | None = None
    held: set[str] | None = None
    while True:
        with sessions.begin() as session:
            rows = ledger.unsettled(session, older_than=cutoff, limit=settings.reconcile_batch, after=after)
            committed = [r.delivery_id for r in rows if r.committed]
            report.settled += ledger.settle(session, committed)
        report.checked += len(rows)
        pending = [r for r in rows if not r.committed]
        if pending:
            if held is None:
                # Not atomic with the ledger read: a delivery committed and acknowledged in
                # between looks lost and is published again, which is harmless (it is skipped).
                # A message never looks held when it is not, so nothing lost is missed.
                held = in_broker() if in_broker is not None else broker_task_ids(settings)
            lost = [r for r in pending if r.batch_id not in held]
            report.in_flight += len(pending) - len(lost)
            _republish(publisher, lost, settings.batch_size, report)
        if len(rows) < settings.reconcile_batch:
            break
        after = (rows[-1].published_at, rows[-1].delivery_id)
    report.seconds = round(time.perf_counter() - started, 3)
    if report.settled or report.republished:
        log.info("reconcile_pass", **report.as_dict())
    return report


def _republish(publisher: Any, lost: list[ledger.Unsettled], batch_size: int, report: Report) -> None:
    by_queue: dict[str, list[ledger.Unsettled]] = {}
    for row in lost:
        by_queue.setdefault(row.queue, []).append(row)
    for queue, rows in by_queue.items():
        for chunk in _chunks(rows, batch_size):
            messages = [DeliveryMessage.model_validate_json(ledger.unpack_message(r.message)) for r in chunk]
            # Through the publisher's ledger path: the rows get the new task id and a fresh
            # last_sent_at before the message goes out, as on the first publish.
            publisher.send(messages, queue=queue)
            report.republished += len(messages)
            report.republished_ids.extend(m.delivery_id for m in messages)
            report.messages += 1
            log.warning("deliveries_republished", queue=queue, deliveries=len(messages),
                        delivery_ids=[m.delivery_id for m in messages][:10])


@dataclass(slots=True)
class PruneReport:
    """What one retention pass deleted, and in how many transactions."""

    ledger_deleted: int = 0
    executions_deleted: int = 0
    transactions: int = 0
    seconds: float = 0.0


def prune(settings: Settings, *, now: datetime | None = None) -> PruneReport:
    """Delete settled ledger rows older than ``ledger_retention_days`` and the execution records of
    committed deliveries older than ``execution_retention_days`` (0 keeps them forever), at most
    ``retention_batch`` rows per transaction (see ``models/ledger.py``, retention)."""
    started = time.perf_counter()
    now = now or utcnow()
    report = PruneReport()
    sessions = session_factory(settings.database_url, write=True)
    limit = settings.retention_batch
    if settings.ledger_retention_days > 0:
        cutoff = now - timedelta(days=settings.ledger_retention_days)
        while True:
            with sessions.begin() as session:
                deleted = ledger.prune_ledger(session, settled_before=cutoff, limit=limit)
            report.transactions += 1
            report.ledger_deleted += deleted
            if deleted < limit:
                break
    if settings.execution_retention_days > 0:
        cutoff = now - timedelta(days=settings.execution_retention_days)
        after: int | None = 0
        while after is not None:
            with sessions.begin() as session:
                deleted, after = ledger.prune_executions(session, started_before=cutoff, after_id=after,
                                                         limit=limit)
            report.transactions += 1
            report.executions_deleted += deleted
    report.seconds = round(time.perf_counter() - started, 3)
    if report.ledger_deleted or report.executions_deleted:
        log.info("retention_pass", **asdict(report))
    return report


class Pruner:
    """Runs :func:`prune` at most every ``retention_interval`` seconds (the first call always)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._last: float | None = None

    def maybe_prune(self) -> PruneReport | None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.settings.retention_interval:
            return None
        self._last = now
        return prune(self.settings)


def run(settings: Settings, publisher: Any, *, every: float, grace: float | None = None,
        should_stop: Callable[[], bool] = lambda: False) -> None:
    """Reconcile every ``every`` seconds until ``should_stop()``, and prune what is past its
    retention every ``retention_interval``; a failed pass (the database or the broker away) is
    logged and retried at the next tick."""
    pruner = Pruner(settings)
    while not should_stop():
        try:
            reconcile_once(settings, publisher, grace=grace)
            pruner.maybe_prune()
        except Exception as exc:
            log.error("reconcile_failed", error=repr(exc))
        deadline = time.monotonic() + every
        while time.monotonic() < deadline and not should_stop():
            time.sleep(min(0.5, every))
