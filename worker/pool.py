"""Celery's prefork pool, with its warm shutdown made safe for large task messages.

The prefork pool sends each task to a pool process through a pipe, writing it from the event loop
without blocking: an akhbar batch (25 to 50 stories, decompressed before it is handed over) is
larger than a pipe's 64 KiB buffer, so it is written in several steps while the process reads it.
A warm shutdown (SIGTERM) stops the event loop, closes the pool and writes the "stop" sentinel to
every process's pipe. When the signal arrived between two steps of such a write, the process had
read a message's length and part of it: the sentinel lands inside that message, the process waits
for bytes that never come, and the worker never exits (its reserved message then waits for the
visibility timeout). The fault tier caught this about once in 30 SIGTERMs.

A task written in full but not yet accepted by its process (the process has not yet read it, or
its reply is still in the pipe) stalled a warm shutdown too, by another path. The consumer's shutdown drops
every task the pool has not seen accepted (``AsynPool.flush``), yet the process runs it; the pool
then stops reading replies once it holds no task, and the process, having sent its result, waits
up to 30 s for the pool to read it (``billiard.pool.Worker._ensure_messages_consumed``) while the
pool waits for the process to exit: the worker took 30 s to stop. The fault tier's SIGTERM under
load met that window in one of its CI runs; tests/faults/test_shutdown.py now opens it on purpose.

:class:`TaskPool` finishes the writes that have started before the pool closes, as the pool already
does when the broker connection is lost (``AsynPool.flush``), and reads the processes' replies until
every task handed to a process, in part or in full, is accepted: the process then runs that task,
the warm shutdown waits for it like for any running task, and its message is acknowledged after the
commit. Writes not yet started are left alone: their messages were never handed to a process and
go back to the queue with the rest of what the worker had reserved.
"""

from __future__ import annotations

import time
from typing import Any

from billiard.pool import RUN
from celery.concurrency import asynpool, prefork

# How long a warm shutdown waits for a pool process to take a task it was handed in full.
ACCEPT_TIMEOUT = 10.0


def finish_started_writes(pool: Any) -> list[tuple[Any, Any]]:
    """Complete every task write to a pool process that has begun, and return the (job, process)
    pairs of every task handed to a process, in part or in full, that it has not yet accepted."""
    handed = []
    for job in list(pool._cache.values()):
        # The write sets ``_write_to`` as its first step: a task without it never reached a pipe.
        proc = getattr(job, "_write_to", None)
        if proc is None:
            continue
        writer = asynpool._get_job_writer(job)
        if writer is not None and writer in pool._active_writers:
            if asynpool.gen_not_started(writer):
                continue
            pool._flush_writer(proc, writer)
        if not job._accepted:
            handed.append((job, proc))
    return handed


def await_acceptance(pool: Any, handed: list[tuple[Any, Any]], timeout: float = ACCEPT_TIMEOUT) -> bool:
    """Read the pool processes' replies until each has accepted the task just handed to it.

    An accepted task is one the worker waits for and acknowledges after it ran; one not accepted
    when the broker connection closes is dropped from the pool and its message goes back to the
    queue. True if every task was accepted (or its process is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = {proc.outqR_fd for job, proc in handed if not job._accepted and proc._is_alive()}
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            return False
        readable, _, _ = asynpool._select(readers=waiting, timeout=0.2)
        for fd in readable:
            pool.handle_result_event(fd)


class TaskPool(prefork.TaskPool):  # type: ignore[misc]
    """The prefork pool (``--pool prefork`` selects it through the ``worker_pool`` setting)."""

    def on_close(self) -> None:
        # A warm shutdown closes the pool first, then the consumer discards what the pool has not
        # started, then the pool's stop writes the sentinels: finish what was started before that.
        if self._pool is not None and self._pool._state == RUN:
            handed = finish_started_writes(self._pool)
            if handed:
                await_acceptance(self._pool, handed)
        super().on_close()
