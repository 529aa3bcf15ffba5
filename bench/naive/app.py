"""The naive baseline's Celery app: Celery's defaults, plus the delivery contract akhbar also keeps.

``celery -A bench.naive.app worker --concurrency=2`` runs it. Only what the naive design needs is
set: the broker and a private key prefix, late acknowledgement and prefetch 1 (the safe settings
every Celery ingestion guide recommends). The serializer is Celery's default JSON.
"""

from __future__ import annotations

from celery import Celery

from akhbar.settings import get_settings

QUEUE = "naive"

settings = get_settings()
app = Celery("naive", broker=settings.broker_url, include=["bench.naive.tasks"])
app.conf.update(
    broker_transport_options={"global_keyprefix": f"{settings.redis_prefix}:"},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
)
