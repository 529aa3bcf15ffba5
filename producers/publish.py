"""The one publishing path: validated deliveries and rejections to ``akhbar.ingest`` messages.

Every producer (replay, drop folder, feeds, HTTP push) ends here. Deliveries are wrapped in
:class:`~worker.messages.DeliveryMessage` with a fresh time-ordered delivery id, grouped into
micro-batches of up to ``batch_size``, and sent to the live or bulk queue. :meth:`Publisher.publish`
returns only once the broker has accepted every message (Redis answered the LPUSH).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from celery import Celery

from akhbar.settings import Settings, get_settings
from worker.messages import Delivery, DeliveryMessage, IngestBatch, Rejection, new_delivery_id

log = structlog.get_logger("akhbar.publish")

# Connection errors while publishing are retried by kombu with this policy before surfacing.
RETRY_POLICY = {"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3}


def encode(messages: list[DeliveryMessage]) -> list[bytes]:
    """Each message as the JSON it has in the ``akhbar.ingest`` task and in the publish ledger."""
    return [m.model_dump_json(exclude_defaults=True).encode("utf-8") for m in messages]


def ledger_rows(messages: list[DeliveryMessage], *, queue: str, task_id: str,
                encoded: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Publish ledger rows for ``messages`` sent as task ``task_id`` on ``queue`` (``encoded``:
    their :func:`encode`, when the caller has it already)."""
    from models.ledger import pack_message

    return [{"delivery_id": m.delivery_id, "run_id": m.run_id, "batch_id": task_id, "queue": queue,
             "message": pack_message(data)}
            for m, data in zip(messages, encoded or encode(messages), strict=True)]


class Publisher:
    """Publishes deliveries to the queue; one per process is enough (thread-safe sends)."""

    def __init__(self, settings: Settings | None = None, *, app: Celery | None = None) -> None:
        from worker.app import create_app

        self.settings = settings or get_settings()
        self.app = app or create_app(self.settings)
        self._redis: Any = None
        # Called with each micro-batch just before it is sent (embedded mode's precomputer).
        self.before_send: Callable[[list[DeliveryMessage]], None] | None = None

    def wrap(self, item: Delivery | Rejection, *, run_id: str | None, correlation_id: str) -> DeliveryMessage:
        """The queue message for one delivery or rejection."""
        if isinstance(item, Delivery):
            return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                                   correlation_id=correlation_id, run_id=run_id, record=item)
        return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                               correlation_id=correlation_id, run_id=run_id, rejected=item)

    def send(self, messages: list[DeliveryMessage], *, live: bool = False, queue: str | None = None,
             task_id: str | None = None, record: bool = True) -> str:
        """Send one micro-batch as one ``akhbar.ingest`` message; returns its task id once the
        broker has it. With ``record`` (and the ledger on), the deliveries go into the publish
        ledger first."""
        queue = queue or (self.settings.queue_live if live else self.settings.queue_bulk)
        IngestBatch(deliveries=messages)  # the task's contract: at least one delivery
        task_id = task_id or str(uuid.uuid4())
        # Each delivery is serialized once, for the ledger and for the message: the task's
        # serializer (orjson) embeds the ledger's JSON as it is (orjson.Fragment), the same
        # document ``IngestBatch.model_dump(mode="json")`` would give, without a second pass.
        encoded = encode(messages)
        if record and self.settings.publish_ledger:
            self.record(messages, queue=queue, task_id=task_id, encoded=encoded)
        correlation_id = messages[0].correlation_id
        self.app.send_task(
            "akhbar.ingest", kwargs={"deliveries": [orjson.Fragment(data) for data in encoded], "v": 1},
            queue=queue, routing_key=queue, headers={"correlation_id": correlation_id}, task_id=task_id,
            retry=True, retry_policy=RETRY_POLICY,
            # What monitoring tools show of the message (Celery would write the fragments' repr).
            kwargsrepr=f"{{'deliveries': <{len(messages)}: {messages[0].delivery_id} ...>, 'v': 1}}",
        )
        return task_id

    def record(self, messages: list[DeliveryMessage], *, queue: str, task_id: str,
               encoded: list[bytes] | None = None) -> None:
        """Write the deliveries to the publish ledger, committed, before they are published.

        Ledger first, broker second: if this process dies between the two, the ledger names a
        delivery the broker never saw, and ``akhbar reconcile`` publishes it after the grace
        period. The other order would leave a window in which only the broker knows of the
        delivery, and a broker restart in that window would lose it without a trace.
        """
        from models.ledger import record_published
        from models.session import session_scope

        with session_scope(self.settings.database_url, write=True) as session:
            record_published(session, ledger_rows(messages, queue=queue, task_id=task_id, encoded=encoded))

    def publish(self, items: Iterable[Delivery | Rejection], *, live: bool = False, run_id: str | None = None,
                correlation_id: str | None = None,
                on_sent: Callable[[list[DeliveryMessage]], None] | None = None) -> list[str]:
        """Publish every item; return the delivery ids once all are accepted by the broker.

        ``on_sent`` is called after each micro-batch is accepted (progress bars, publish ledgers).
        """
        correlation_id = correlation_id or run_id or uuid.uuid4().hex
        size = self.settings.batch_size
        ids: list[str] = []
        pending: list[DeliveryMessage] = []
        for item in items:
            pending.append(self.wrap(item, run_id=run_id, correlation_id=correlation_id))
            if len(pending) >= size:
                self._flush(pending, live, on_sent, ids)
                pending = []
        if pending:
            self._flush(pending, live, on_sent, ids)
        return ids

    def _flush(self, pending: list[DeliveryMessage], live: bool,
               on_sent: Callable[[list[DeliveryMessage]], None] | None, ids: list[str]) -> None:
        if self.before_send is not None:
            self.before_send(pending)
        self.send(pending, live=live)
        ids.extend(m.delivery_id for m in pending)
        log.debug("batch_published", deliveries=len(pending), live=live)
        if on_sent is not None:
            on_sent(pending)

    def queue_depth(self) -> int:
        """Messages waiting on the live and bulk queues (0 in embedded mode, which never backs up)."""
        if self.settings.redis_url is None:
            return 0
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.settings.redis_url.get_secret_value())
        prefix = f"{self.settings.redis_prefix}:"
        pipe = self._redis.pipeline(transaction=False)
        for queue in (self.settings.queue_live, self.settings.queue_bulk):
            pipe.llen(prefix + queue)
        return int(sum(pipe.execute()))

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
