"""The Celery application factory. Every non-default setting says why.

Delivery contract: a message is acknowledged only after the task's transaction has committed
(``task_acks_late``), redelivered if the process running it dies (``task_reject_on_worker_lost``),
and each worker process reserves one message at a time (prefetch 1) so a crash or a slow batch
holds back as little as possible. https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

import orjson
from celery import Celery
from kombu import Exchange, Queue, compression
from kombu.serialization import register

from akhbar import zstd
from akhbar.settings import Settings, get_settings

SERIALIZER = "json-utf8"


def _dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def _loads(data: bytes | str) -> object:
    return orjson.loads(data)


# Celery's default JSON encoder escapes every Arabic letter as \uXXXX (6 bytes for a 2-byte letter).
# orjson writes UTF-8; the content type stays application/json, the only one workers accept, so a
# pickle (or any other) message is refused before it is decoded.
register(SERIALIZER, _dumps, _loads, content_type="application/json", content_encoding="utf-8")

# Message bodies are zstd frames (akhbar/zstd.py): on the corpus, in batches of 100, 16 us of
# producer CPU and 957 bytes a story, where zlib at level 4 took 66 us for 1,052 bytes and a
# worker's decompression 14 us instead of 3.4. kombu registers zstd only on Python 3.14 (or
# with backports.zstd); this registration uses python-zstandard, same content type and frames.
# zlib bodies (the format before zstd) are still decoded, by kombu's own zlib codec: messages
# queued by an older producer are read after an upgrade. Producers send zstd only.
compression.register(zstd.compress, zstd.decompress, zstd.CONTENT_TYPE, aliases=zstd.ALIASES)


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()
    app = Celery("akhbar")
    exchange = Exchange("akhbar", type="direct")
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # A reserved but unacknowledged message goes back to the queue after this many seconds:
            # it must exceed the longest task (task_time_limit), or a slow batch runs twice.
            # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
            "visibility_timeout": settings.visibility_timeout,
            # How often a worker returns messages whose consumer died to the queue once their
            # visibility timeout has passed; kombu's default sweep (10 s x every 10th call) would
            # add 100 s to every recovery. See the transport options in kombu/transport/redis.py.
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # Private key prefix: several deployments (or test runs) can share one Redis database.
            "global_keyprefix": f"{settings.redis_prefix}:",
            # Consume the live queue before the bulk one whenever both hold messages.
            "queue_order_strategy": "priority",
        },
        task_serializer=SERIALIZER,
        accept_content=["application/json"],
        # Arabic text compresses about 3:1; the Redis transport base64-encodes bodies anyway, so the
        # compressed body is the smallest message on the wire and in Redis memory.
        task_compression="zstd",
        # Outcomes live in the database, the authority; a result backend would only add writes.
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task killed by the hard time limit is requeued, not acknowledged as failed: its
        # execution records count the attempt, and quarantine bounds how often that happens.
        task_acks_on_timeout=False,
        worker_prefetch_multiplier=1,
        # The prefork pool with a safe warm shutdown for messages larger than a pipe's buffer (see
        # worker/pool.py); `--pool prefork` on the command line selects it too.
        worker_pool="worker.pool:TaskPool",
        # With acks_late, a lost broker connection would otherwise let a running task finish while
        # its message is redelivered elsewhere. https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-cancel-long-running-tasks-on-connection-loss
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Bounded work per message: a batch of 50 stories takes well under a second; a task still
        # running after the soft limit is a hang (quarantined), the hard limit kills the process.
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_queues=(
            Queue(settings.queue_live, exchange, routing_key=settings.queue_live),
            Queue(settings.queue_bulk, exchange, routing_key=settings.queue_bulk),
        ),
        task_default_queue=settings.queue_bulk,
        task_default_exchange="akhbar",
        task_default_routing_key=settings.queue_bulk,
        task_create_missing_queues=False,
        # akhbar configures logging itself (structlog owns the root logger).
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # Bound the memory of a long-running pool child (KiB): it is replaced after its current task.
        worker_max_memory_per_child=600_000,
        enable_utc=True,
    )
    app.akhbar_settings = settings  # type: ignore[attr-defined]
    from worker.tasks import register_tasks

    register_tasks(app)
    # Evaluate the task registry now: a worker started in a thread (embedded mode) reads it before
    # anything else would have finalized the app.
    app.finalize()
    # Celery registers its canvas and maintenance tasks (celery.map, celery.chunks, celery.chord_unlock,
    # ...) on every app; akhbar uses none of them, and a message naming one would run it. Without
    # them, a message naming any task but akhbar's is refused as unknown before anything runs.
    for name in [n for n in app.tasks if not n.startswith("akhbar.")]:
        app.tasks.unregister(name)

    return app
