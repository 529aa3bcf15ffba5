"""Embedded mode: the same Celery tasks, run by an in-process worker on Celery's in-memory transport.

Used when no Redis URL is configured, so ``akhbar replay`` works on a fresh machine with no servers.
The worker is a regular :class:`celery.worker.WorkController` (solo pool) started in a thread, the
same way Celery's own ``celery.contrib.testing.worker`` embeds one.

Its messages never leave the process, so they are neither compressed (the app's ``task_compression``)
nor base64-encoded (the virtual transports' default ``body_encoding``): replaying the corpus spent
about 3% of its CPU on both, for nothing. The distributed mode's messages are unchanged.

Its transport is kombu's in-memory one, except that a worker told to stop does so at once
(:class:`EmbeddedTransport`) instead of after Celery's 2-second wait for messages.

While it runs, the process's cyclic garbage collector starts a young collection every
:data:`GC_THRESHOLD` container allocations instead of Python's 700: producer and worker share the
process, and the stories' work allocates hundreds of thousands of short-lived dicts and lists whose
reference counts already free them. Replaying 6,000 corpus records spent 0.52-0.54 s of CPU in the
collector (467 collections, 5 of them full) instead of 0.72-0.74 s (about 1,490, 12 full); peak
RSS 358-359 MB instead of 350-354 MB.
"""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.transport import memory

# Container allocations between young collections while the embedded worker runs (Python's is 700);
# the older generations keep Python's ratios (10).
GC_THRESHOLD = 10_000
# Seconds between looks at empty in-memory queues (kombu's default for its virtual transports: 1).
POLLING_INTERVAL = 0.01
# Longest wait for a message in one drain (see EmbeddedTransport).
DRAIN_TIMEOUT = 0.05


class EmbeddedTransport(memory.Transport):  # type: ignore[misc]
    """kombu's in-memory transport, whose wait for messages ends after at most DRAIN_TIMEOUT.

    Celery's solo worker loop (``celery.worker.loops.synloop``) drains in waits of 2 s and looks
    at whether it has been told to stop only between them: stopping the embedded worker took 2 s
    of every replay. Queues and messages are the in-memory transport's own (class-level state).
    """

    def drain_events(self, connection: Any, timeout: float | None = None, **_: Any) -> Any:
        if timeout is not None and timeout > DRAIN_TIMEOUT:
            timeout = DRAIN_TIMEOUT
        return super().drain_events(connection, timeout=timeout)


@contextmanager
def precomputing(publisher: Any) -> Iterator[Any]:
    """Compute the deliveries ``publisher`` sends ahead in a second process, for the duration of
    the block (worker/precompute.py); nothing on a one-core machine or with the setting off.

    Enter it before the embedded worker starts: its process is forked while this is the only thread.
    """
    import os

    from worker import precompute

    settings = publisher.settings
    if not settings.embedded_precompute or (os.cpu_count() or 1) < 2 or precompute.ACTIVE is not None:
        yield None
        return
    # It builds the gazetteer and the rest here, shared with its process (the embedded worker then
    # finds them built).
    precomputer = precompute.Precomputer()
    precompute.ACTIVE, publisher.before_send = precomputer, precomputer.submit
    try:
        yield precomputer
    finally:
        precompute.ACTIVE, publisher.before_send = None, None
        precomputer.close()


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
    app.conf.broker_transport = f"{__name__}:EmbeddedTransport"
    # An idle in-memory consumer looks at its queues again after polling_interval (kombu's virtual
    # transports: 1 s); at the start of a replay, the first message would wait for it.
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "body_encoding": None,
                                         "polling_interval": POLLING_INTERVAL}

    # app.WorkController is the worker class bound to this app (its task registry and settings).
    class Controller(app.WorkController):  # type: ignore[name-defined,misc]
        def on_consumer_ready(self, consumer: object) -> None:
            ready.set()

    thresholds = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, 10, 10)
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
    try:
        if not ready.wait(timeout):
            raise RuntimeError("the embedded worker did not start")
        try:
            yield controller
        finally:
            controller.stop(in_sighandler=False)
            thread.join(timeout)
    finally:
        gc.set_threshold(*thresholds)
