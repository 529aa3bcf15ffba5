"""Fail points: faults injected on purpose, for the fault-test tier only.

Named after FreeBSD's fail(9) and etcd's gofail: code paths that misbehave on request so that
tests can prove what the rest of the system does when they do. Every fail point is off unless
``AKHBAR_FAILPOINTS`` names it, and production never sets it:

- ``poison``: a delivery whose source record carries ``"failpoint": "raise" | "hang" | "kill"``
  raises, sleeps past every time limit, or SIGKILLs the process running it, on every attempt.
- ``early_ack``: the ingest task acknowledges its message when it is received instead of after
  the commit, which is how a worker loses messages; the negative control of the fault tier.
"""

from __future__ import annotations

import os
import signal
import time

from akhbar.settings import Settings
from worker.messages import DeliveryMessage

POISONS = ("raise", "hang", "kill")


class PoisonError(RuntimeError):
    """The error a ``raise`` poison delivery raises."""


def enabled(settings: Settings, name: str) -> bool:
    """Whether the fail point ``name`` is switched on."""
    return name in {part.strip() for part in settings.failpoints.split(",") if part.strip()}


def poison(settings: Settings, msg: DeliveryMessage) -> None:
    """Misbehave as the delivery asks, if the ``poison`` fail point is on."""
    if msg.record is None or not enabled(settings, "poison"):
        return
    kind = msg.record.extra.get("failpoint")
    if kind == "raise":
        raise PoisonError(f"poison delivery {msg.delivery_id}")
    if kind == "hang":
        # Interruptible, like a stuck network call: the per-delivery deadline or the task's soft
        # time limit interrupts it; otherwise the hard time limit kills the process.
        time.sleep(3600)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
