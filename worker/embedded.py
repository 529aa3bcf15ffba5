"""Embedded mode: the same Celery tasks, run by an in-process worker on Celery's in-memory transport.

Used when no Redis URL is configured, so ``akhbar replay`` works on a fresh machine with no servers.
The worker is a regular :class:`celery.worker.WorkController` (solo pool) started in a thread, the
same way Celery's own ``celery.contrib.testing.worker`` embeds one.

Its messages never leave the process, so they are neither compressed (the app's ``task_compression``)
nor base64-encoded (the virtual transports' default ``body_encoding``): replaying the corpus spent
about 3% of its CPU on both, for nothing. The distributed mode's messages are unchanged.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery


@contextmanager
def embedded_worker(app: Celery, queues: list[str], *, timeout: float = 30.0) -> Iterator[Any]:
    """Run a one-thread worker consuming ``queues`` for the duration of the block.

    ``app`` must use the in-memory transport; from here on, the messages it publishes go
    uncompressed and unencoded (see the module docstring).
    """
    if not str(app.conf.broker_url).startswith("memory://"):
        raise ValueError("the embedded worker runs on Celery's in-memory transport only")
    # Read when the app's first connection and its task sender are made: nothing has sent yet.
    app.conf.task_compression = None
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "body_encoding": None}

    # app.WorkController is the worker class bound to this app (its task registry and settings).
    class Controller(app.WorkController):  # type: ignore[name-defined,misc]
        def on_consumer_ready(self, consumer: object) -> None:
            ready.set()

    ready = threading.Event()
    controller = Controller(
        pool="solo", concurrency=1, queues=queues, hostname=f"embedded@{socket.gethostname()}",
        loglevel="WARNING", without_heartbeat=True, without_mingle=True, without_gossip=True,
        ready_callback=None,
    )

    def run() -> None:
        # Celery's solo pool looks tasks up on the *current* app, which is thread-local.
        app.set_current()
        controller.start()

    thread = threading.Thread(target=run, name="akhbar-embedded-worker", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise RuntimeError("the embedded worker did not start")
    try:
        yield controller
    finally:
        controller.stop(in_sighandler=False)
        thread.join(timeout)
