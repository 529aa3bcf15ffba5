"""Embedded mode's second core: each delivery's CPU-only work, computed ahead in another process.

In embedded mode one process publishes and ingests, and its worker is one thread: a replay of the
corpus kept one core busy and left the other idle. About half of a story's CPU in that thread is
work that depends on the delivery alone (its match form, enrichment and near-duplicate signature,
the same pure functions the pipeline calls), and the producer knows every delivery before the
worker takes it. :class:`Precomputer` runs that work in a pool process as the producer publishes;
the pipeline takes the result instead of computing it (``take``), or computes it itself when there
is none (not submitted, not finished in time, evicted, failed): a result changes only where the
work runs, never what it gives. Everything that touches the database, the index or the story's
outcome stays in the worker.

The pool process is forked once, before the embedded worker and the producer start (no other thread
is running then), from a process whose gazetteer and language model are built, so it shares them.
It is only used in embedded mode; a distributed worker already runs one process per core.

How far ahead it may run is bounded (:data:`AHEAD` micro-batches submitted and not yet taken): the
producer waits for the worker beyond that, so memory stays flat however long the replay. A result
the worker never asks for (a delivery it skipped) is dropped when the producer needs the room.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from worker.messages import Delivery, DeliveryMessage

log = structlog.get_logger("akhbar.precompute")

# Micro-batches submitted and not yet taken in full by the worker, at most (with embedded mode's
# batches of 200, the results of 600 corpus stories: about 12 MB).
AHEAD = 3
# How long the producer waits for room before it drops the oldest batch's results.
ROOM_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class Work:
    """What the pipeline would compute for one delivery, and how long each part took."""

    norm: Any  # worker.stages.normalize.Normalized
    enrichment: dict[str, Any]
    signature: Any  # worker.neardup.signature.Signature
    ms: tuple[float, float, float]  # normalize, enrich, signature


def prepare() -> None:
    """Build what the work uses (the signature's tables, the gazetteer, the language model) once in
    this process, so that the processes forked from it share them instead of building their own."""
    from worker.neardup.signature import signature
    from worker.stages.enrich import warm

    signature(match_title="تحذير", match_body="قال المتحدث في بيان صدر اليوم إن العمل مستمر",
              published_at=None, source="warm")
    warm()


def compute(record: Delivery) -> Work:
    """The delivery's match form, enrichment and signature, exactly as the pipeline computes them."""
    return _compute(*_inputs(record))


def _compute(title: str | None, body: str, format: str, published_at: Any, language: str | None,
             source: str) -> Work:
    from worker.neardup.signature import signature
    from worker.stages import enrich as enrich_stage
    from worker.stages import normalize as normalize_stage

    t0 = time.perf_counter()
    norm = normalize_stage.normalize(title=title, body=body, format=format)
    t1 = time.perf_counter()
    enrichment = enrich_stage.enrich(title=title, body=body, paragraphs=norm.paragraphs,
                                     match_title=norm.match_title, match_body=norm.match_body,
                                     published_at=published_at, language_hint=language)
    t2 = time.perf_counter()
    sig = signature(match_title=norm.match_title, match_body=norm.match_body, published_at=published_at,
                    source=source)
    t3 = time.perf_counter()
    return Work(norm=norm, enrichment=enrichment, signature=sig,
                ms=(round((t1 - t0) * 1000, 3), round((t2 - t1) * 1000, 3), round((t3 - t2) * 1000, 3)))


def _values(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def _compute_batch(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...] | None]:
    """In the pool process: each row's work, as plain tuples (a frozen dataclass unpickles about
    ten times slower than the tuple of its fields); None where the work raised."""
    out: list[tuple[Any, ...] | None] = []
    for row in rows:
        try:
            work = _compute(*row)
        except Exception:
            out.append(None)  # the worker computes it again, and handles what it raises
            continue
        out.append((_values(work.norm), work.enrichment, _values(work.signature), work.ms))
    return out


def _work(values: tuple[Any, ...]) -> Work:
    from worker.neardup.signature import Signature
    from worker.stages.normalize import Normalized

    norm, enrichment, sig, ms = values
    return Work(norm=Normalized(*norm), enrichment=enrichment, signature=Signature(*sig), ms=ms)


def _ready() -> bool:
    return True


def _inputs(record: Delivery) -> tuple[Any, ...]:
    """What the work depends on: all of it, and nothing else."""
    return (record.title, record.body, record.format, record.published_at, record.language, record.source)


@dataclass
class _Batch:
    future: Future[list[tuple[Any, ...] | None]]
    ids: list[str]
    left: int
    # The inputs as submitted: a record the worker changed since (its input checks sanitize some
    # texts) does not get the work of the record as it was.
    inputs: list[tuple[Any, ...]]


class Precomputer:
    """A one-process pool computing deliveries' :class:`Work` ahead of the worker, a micro-batch
    (one message's deliveries) at a time."""

    def __init__(self, processes: int = 1, ahead: int = AHEAD) -> None:
        self.ahead = ahead
        self._pool = ProcessPoolExecutor(max_workers=processes,
                                         mp_context=multiprocessing.get_context("fork"))
        self._batches: OrderedDict[int, _Batch] = OrderedDict()
        self._where: dict[str, tuple[int, int]] = {}
        self._serial = 0
        self._room = threading.Condition()
        self.broken = False
        self.taken = self.missed = self.dropped = 0
        # What the work imports and builds is ready before the fork, and the fork is now, while
        # this is the process's only thread (embedded mode), so the child never waits for a lock
        # that a thread of the parent held when it was forked.
        prepare()
        self._pool.submit(_ready).result(timeout=60)

    def submit(self, messages: Iterable[DeliveryMessage]) -> None:
        """Start the work of these deliveries (the producer calls it before it sends them)."""
        if self.broken:
            return
        ids, rows = [], []
        for msg in messages:
            if msg.record is not None:
                ids.append(msg.delivery_id)
                rows.append(_inputs(msg.record))
        if not rows:
            return
        with self._room:
            if len(self._batches) >= self.ahead and not self._room.wait_for(
                    lambda: len(self._batches) < self.ahead, ROOM_WAIT):
                # The worker has not asked for the oldest batch's rest for a while: it skipped it.
                self._drop(next(iter(self._batches)))
            try:
                future = self._pool.submit(_compute_batch, rows)
            except Exception as exc:  # the pool is gone: the worker computes everything itself
                self._broke(exc)
                return
            self._serial += 1
            self._batches[self._serial] = _Batch(future, ids, len(ids), rows)
            self._where.update((delivery_id, (self._serial, i)) for i, delivery_id in enumerate(ids))

    def _drop(self, serial: int) -> None:
        batch = self._batches.pop(serial)
        batch.future.cancel()
        self.dropped += batch.left
        for delivery_id in batch.ids:
            self._where.pop(delivery_id, None)
        self._room.notify_all()

    def take(self, delivery_id: str, record: Delivery, timeout: float = 10.0) -> Work | None:
        """The work of the delivery, if it was computed from this very ``record`` (waiting for it if
        its batch is running); None if there is none."""
        with self._room:
            where = self._where.pop(delivery_id, None)
            if where is None:
                self.missed += 1
                return None
            serial, index = where
            batch = self._batches[serial]
            batch.left -= 1
            if batch.left == 0:
                del self._batches[serial]
                self._room.notify_all()
            if not batch.future.done() and batch.future.cancel():
                # Still queued behind others: computing here is sooner than waiting for them.
                if serial in self._batches:
                    self._drop(serial)
                self.missed += 1
                return None
        try:
            values = batch.future.result(timeout=timeout)[index]
        except CancelledError:  # dropped meanwhile for room
            self.missed += 1
            return None
        except Exception as exc:
            # The pool process died (BrokenProcessPool) or stopped answering: it is not used
            # again, and the worker computes what it asks for itself.
            self._broke(exc)
            self.missed += 1
            return None
        if values is None or batch.inputs[index] != _inputs(record):
            self.missed += 1
            return None
        self.taken += 1
        return _work(values)

    def _broke(self, exc: BaseException) -> None:
        if not self.broken:
            self.broken = True
            log.warning("precompute_stopped", error=repr(exc)[:300])

    def close(self) -> None:
        with self._room:
            for batch in self._batches.values():
                batch.future.cancel()
            self._batches.clear()
            self._where.clear()
            self._room.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("precompute_closed", taken=self.taken, missed=self.missed, dropped=self.dropped)


# The precomputer of this process (embedded mode), or None.
ACTIVE: Precomputer | None = None


def take(delivery_id: str, record: Delivery) -> Work | None:
    """The precomputed work of a delivery, if this process has a precomputer that has it."""
    active = ACTIVE
    return None if active is None else active.take(delivery_id, record)
