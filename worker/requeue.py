"""A message whose worker died goes back to the front of its queue, not the back.

With ``task_reject_on_worker_lost``, Celery requeues the message of a task whose pool process died
(killed, out of memory, a poison delivery that crashes it). kombu's Redis transport puts a
rejected message at the *back* of the queue (``LPUSH``; workers ``BRPOP`` from the other end), so
the deliveries of that batch that did nothing wrong wait for the whole backlog before they are
committed, and a poison delivery's next attempt comes only after it. The same transport restores
the messages of a worker that vanished (visibility timeout) at the *front* (``RPUSH``), which is
what a crash deserves too: the batch runs again at once, the running-delivery mark charges the
crash to the delivery that caused it (``worker/quarantine.py``), and its batch-mates are committed
within a batch's time of the crash.

:class:`FrontRequeueRequest` (the ``Request`` class of akhbar's tasks) does that on the Redis
transport, through the transport's own restore (the one it uses for the visibility timeout), in one
Redis transaction that moves the message from the unacknowledged set to the queue. On any other
transport, or if that fails, it falls back to Celery's ordinary reject-and-requeue. Either way it
first publishes the lost process's running mark (worker/marks.py), so that the message cannot run
again before its mark is in Redis.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.worker.request import Request

log = structlog.get_logger("akhbar.requeue")


def requeue_at_front(message: Any) -> bool:
    """Put an unacknowledged Redis-transport message back at the front of its queue; False if the
    transport cannot (the caller then rejects it the ordinary way)."""
    channel = getattr(message, "channel", None)
    qos = getattr(channel, "qos", None)
    restore = getattr(qos, "restore_by_tag", None)
    if qos is None or restore is None or getattr(message, "acknowledged", True):
        return False
    tag = message.delivery_tag
    if tag not in getattr(qos, "_delivered", {}):
        return False
    restore(tag, leftmost=False)
    # What the transport's own reject does after restoring: forget the delivery locally.
    qos._quick_ack(tag)
    message._state = "REJECTED"
    return True


class FrontRequeueRequest(Request):  # type: ignore[misc]
    """Celery's request, except that a requeued message (its worker was lost) goes to the front.

    Celery's own reject path runs unchanged (the same callback, thread and events); only the
    message's ``reject`` is swapped for one that restores it at the front."""

    def reject(self, requeue: bool = False) -> None:
        if requeue and not self.acknowledged:
            # Before the message can run again: the delivery the lost process was running, from
            # its mark file into Redis, where the redelivered attempt reads it (worker/marks.py).
            from akhbar.settings import get_settings
            from worker import quarantine

            quarantine.publish_lost_mark(get_settings(), self.worker_pid, self.id)
            message = self._message
            ordinary = message.reject

            def reject_to_front(requeue: bool = False) -> None:
                try:
                    if requeue and requeue_at_front(message):
                        log.info("message_requeued_at_front", task_id=self.id)
                        return
                except Exception as exc:  # the transport's internals moved: the ordinary way
                    log.warning("requeue_at_front_failed", task_id=self.id, error=repr(exc)[:300])
                ordinary(requeue=requeue)

            message.reject = reject_to_front
        super().reject(requeue=requeue)
