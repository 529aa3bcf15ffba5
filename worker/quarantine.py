"""Bounded attempts, execution records and quarantine: how a poison delivery stops hurting.

Plain functions and classes, no Celery: the ingest task (``worker/tasks.py``) drives an
:class:`AttemptRunner` and maps its outcomes onto Celery (acknowledge, retry, requeue).

How an attempt goes:

1. In its own short transaction (:meth:`AttemptRunner.begin`): skip deliveries already committed,
   read the earlier failed attempts of the rest from the execution records, quarantine those that
   have failed ``max_attempts`` times, and split the rest. Deliveries that never failed run
   *together* (batch mode): one execution record per delivery is written now, and they are one
   transaction. Deliveries that failed before (*suspects*) then run *alone*, one at a time, each
   with its own execution record written just before it starts and its own transaction, so a
   delivery that crashes or hangs its worker again is charged alone and nothing else is lost
   with it.
2. Each delivery runs under a deadline (SIGALRM where available): ``delivery_time_limit``, or in
   batch mode a tighter one derived from what deliveries take (:class:`RecentTimes`), cut short
   when the delivery's computation stops using the CPU (:func:`deadline`'s ``stall``), and
   its id is marked as the one running (:class:`RunningMarks`, in memory that outlives the
   process; its worker node puts the mark in Redis when the process dies). When a worker dies in
   a batch-mode attempt, every record of that attempt is left unfinished; the redelivered message
   reads the mark and charges the lost attempt to the delivery that was running only, so its
   batch-mates run together again at once instead of becoming suspects.
3. The execution records are finished in the same transaction that commits the deliveries, so an
   execution record still unfinished later is an attempt whose worker died or was killed.

Quarantine stores the delivery as ``rejected`` with a reason code (one of :data:`QUARANTINE_CODES`),
a message and the last traceback; ``akhbar dlq replay`` puts it back on the queue after a fix.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from models import ingest as queries
from models import ledger
from worker import marks, pipeline
from worker.messages import Delivery, DeliveryMessage, IngestBatch
from worker.neardup import CandidateIndex
from worker.stages import neardup as neardup_stage

log = structlog.get_logger("akhbar.quarantine")

# Broker priority of a message retried for deliveries that failed in it (everything else of it is
# committed): on the Redis transport, workers take a queue's priority-9 list only when its other
# lists (and those of the queues consumed before it) are empty, so a delivery that has already
# raised or hung is tried again after the messages not known to hold one, instead of taking a
# worker's time from them. https://docs.celeryq.dev/en/stable/userguide/routing.html#redis-message-priorities
SUSPECT_PRIORITY = 9

# Reason codes of quarantined deliveries (``deliveries.error->>'code'``), the dead-letter set.
QUARANTINE_CODES = ("processing_error", "worker_lost", "timeout", "retries_exhausted")


class DeliveryTimeout(Exception):
    """One delivery ran past ``delivery_time_limit``."""


# The share of one core under which a delivery's computation counts as blocked (see deadline).
STALL_CPU_SHARE = 0.05


@dataclass(slots=True)
class _Step:
    """What the SIGALRM handler checks: the block running under :func:`deadline` now."""

    seconds: float
    what: str
    tick: float
    started: float
    cpu: float  # the thread's CPU time at the last tick


_STEP: _Step | None = None


def _expired(_signum: int, _frame: Any) -> None:
    step = _STEP
    if step is None:  # an alarm of a block that has just ended
        return
    elapsed = time.monotonic() - step.started
    left = step.seconds - elapsed
    if left <= 0.001:
        raise DeliveryTimeout(f"delivery still running after {step.seconds:g} s{step.what}")
    now = time.thread_time()
    used, step.cpu = now - step.cpu, now
    if used < STALL_CPU_SHARE * step.tick:
        raise DeliveryTimeout(f"delivery still running after {elapsed:.2f} s and blocked: "
                              f"{used * 1000:.1f} ms of CPU in its last {step.tick:g} s of work that "
                              f"does no I/O{step.what}")
    signal.setitimer(signal.ITIMER_REAL, min(step.tick, left))


def _can_alarm() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


@contextmanager
def alarm_handler() -> Iterator[None]:
    """Keep :func:`deadline`'s SIGALRM handler installed for the whole block, so that the deadlines
    inside it only arm and disarm the timer: installing and restoring a handler costs about
    7 µs, half of a deadline's cost, twice for each delivery of a batch."""
    if not _can_alarm() or signal.getsignal(signal.SIGALRM) is _expired:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expired)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def deadline(seconds: float, what: str = "", *, stall: float = 0.0) -> Iterator[None]:
    """Raise :class:`DeliveryTimeout` in this block after ``seconds``; with ``stall``, also as
    soon as a ``stall``-second stretch of it ran with under :data:`STALL_CPU_SHARE` of a core.

    A SIGALRM interval timer: the only way to interrupt arbitrary Python code from the inside. It is
    armed only in a process's main thread (where Python delivers signals), which is where prefork
    pool children run tasks; elsewhere (the embedded worker's thread) the task's time limits remain.
    The handler is installed for the block, unless an enclosing :func:`alarm_handler` keeps it.

    ``stall`` is for work that does no I/O (a step of a batch: normalizing, enriching). Such work
    runs on the CPU, or waits for it behind the machine's other processes; a process that spends a
    whole stretch off the CPU in it is blocked (a stuck call, a lock that never comes), not slow,
    and waiting out the rest of ``seconds`` would only keep its batch-mates waiting. The timer
    then ticks every ``stall`` seconds and compares the thread's CPU time over the last tick.
    Work that only runs long keeps the CPU and still gets the full ``seconds``.
    """
    global _STEP
    if seconds <= 0 or not _can_alarm():
        yield
        return
    tick = stall if 0 < stall < seconds else seconds
    outer = _STEP
    own_handler = signal.getsignal(signal.SIGALRM) is not _expired
    previous = signal.signal(signal.SIGALRM, _expired) if own_handler else None
    _STEP = _Step(seconds, what, tick, time.monotonic(), time.thread_time())
    signal.setitimer(signal.ITIMER_REAL, tick)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _STEP = outer
        if own_handler:
            signal.signal(signal.SIGALRM, previous)


class RecentTimes:
    """How long the deliveries' own work took lately in this process, for the first attempt's limit.

    A delivery that never failed runs in a batch, and while it hangs, the whole batch waits: under
    the full ``delivery_time_limit`` (30 s, there for a story that is slow, not stuck) a hang holds
    its 49 batch-mates that long. Its first attempt runs under a limit derived from what stories
    really take here: ``max(floor, factor x`` the 99th percentile of the last :data:`SIZE` times of
    a delivery's own work (each step run under the deadline) ``)``, never above the full limit,
    and the floor itself until :data:`MIN_SAMPLES` are known (a new process's first batch, which is
    also the batch a replaced process reruns after a crash: under the full limit, a hang there
    would hold its batch-mates 30 s; the floor is a hundred times what a story's steps take, even
    in a fresh process, which the pool forks warm). One that
    runs past it is charged a timeout like any other; its later attempts run alone (as a suspect)
    with the full limit, so a story that is only slow is stored at its second attempt and is
    quarantined only if it also runs past the full limit twice.
    """

    SIZE = 1000
    MIN_SAMPLES = 20

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=self.SIZE)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def limit(self, full: float, *, floor: float, factor: float) -> float:
        """The first attempt's limit (``full`` when ``floor`` is 0: no tighter limit)."""
        n = len(self.samples)
        if floor <= 0:
            return full
        if n < self.MIN_SAMPLES:
            return min(full, floor)
        p99 = sorted(self.samples)[int(0.99 * (n - 1))]
        return min(full, max(floor, factor * p99))


# This process's times (a pool process inherits an empty one: its parent runs no deliveries).
RECENT = RecentTimes()


def quarantine_reason(h: ledger.History) -> tuple[str, str]:
    """Reason code and message of a delivery quarantined after the failed attempts ``h``."""
    code = {"unfinished": "worker_lost", "timeout": "timeout", "error": "processing_error"}[h.last_kind]
    message = (f"{h.failed} failed attempts: {h.unfinished} crashed or killed their worker, "
               f"{h.timeouts} timed out, {h.errors} raised")
    return code, message


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who is making this attempt: the broker message (task id, retry number) and the process."""

    task_id: str
    attempt: int
    worker: str
    pid: int


@dataclass(slots=True)
class Plan:
    """What :meth:`AttemptRunner.begin` decided for one attempt."""

    # Everything this attempt runs: the deliveries that never failed first, then the suspects.
    todo: list[DeliveryMessage]
    skipped: int
    poison: list[tuple[DeliveryMessage, ledger.History]]
    # Whether some deliveries have failed before (they run one at a time, after the others).
    isolated: bool
    # Execution record ids by delivery id (batch mode: all written up front).
    exec_ids: dict[str, int] = field(default_factory=dict)
    # Deliveries with earlier failed attempts, fewest first: each runs alone, with its own record
    # and transaction, so if it crashes or hangs again it is charged alone.
    suspects: list[DeliveryMessage] = field(default_factory=list)
    # An earlier run of this message lost with its worker, and the delivery it was running then.
    lost_while: str | None = None

    @property
    def together(self) -> list[DeliveryMessage]:
        """The deliveries that run together, in one transaction (none of them failed before)."""
        suspects = {d.delivery_id for d in self.suspects}
        return [d for d in self.todo if d.delivery_id not in suspects]


@dataclass(slots=True)
class Result:
    """What one attempt did."""

    outcomes: list[pipeline.Outcome] = field(default_factory=list)
    quarantined: int = 0
    skipped: int = 0
    # Deliveries that failed in this attempt (timed out or raised) and may be attempted again.
    failed: list[str] = field(default_factory=list)
    # Suspects not run in this attempt: they go on a retry of the message, behind everything else.
    deferred: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for outcome in self.outcomes:
            out[outcome.status] = out.get(outcome.status, 0) + 1
        if self.quarantined:
            out["quarantined"] = self.quarantined
        if self.skipped:
            out["already_processed"] = out.get("already_processed", 0) + self.skipped
        if self.failed:
            out["failed"] = len(self.failed)
        if self.deferred:
            out["deferred"] = len(self.deferred)
        return out


class RunningMarks:
    """Which delivery each attempt is running right now: ``<prefix>:running:<task>:<n>`` in Redis
    once its process has died.

    Marked before each delivery starts (no database write), so that when a worker dies in the
    middle of a batch-mode attempt, the redelivered message knows which delivery it died on. Only
    that one is charged the lost attempt; the others of the batch are not suspects and run
    together again at once, instead of one transaction each.

    A mark is a store into this process's mark file (worker/marks.py): no system call, no Redis
    command. The worker node's main process publishes a dead pool process's mark to Redis before
    it requeues the message, and a starting worker node publishes those every dead process left on
    the machine; :meth:`read` is the redelivered attempt's look at Redis. A mark that cannot be
    written, published or read (no writable directory, Redis away) only loses the attribution:
    every delivery of the lost attempt is then a suspect, which is slower, never less safe.
    """

    def __init__(self, client: Any, prefix: str, ttl: int, where: Path | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.where = where
        self._file: marks.MarkFile | None = None
        self._pid = -1
        self._found: set[str] = set()  # keys read from Redis: deleted when their attempt ends

    def _key(self, attempt: Attempt) -> str:
        return f"{self.prefix}:running:{attempt.task_id}:{attempt.attempt}"

    def own_file(self) -> marks.MarkFile:
        """This process's mark file (a forked process makes its own)."""
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            self._file = marks.MarkFile(marks.path_of(pid, self.where))
            self._pid = pid
        return self._file

    def mark(self, attempt: Attempt, delivery_id: str) -> bool:
        """Record ``delivery_id`` as the one running; False if it could not be (the caller then
        stops marking for this attempt)."""
        try:
            self.own_file().mark(self._key(attempt), delivery_id)
        except Exception as exc:  # no directory, a full disk: the attribution is lost, nothing else
            log.warning("running_mark_failed", error=repr(exc)[:300])
            return False
        return True

    def read(self, attempt: Attempt) -> str | None:
        """The delivery a lost run of this attempt died on, as its worker node published it."""
        key = self._key(attempt)
        try:
            value = self.client.get(key)
        except Exception as exc:
            log.warning("running_mark_failed", error=repr(exc)[:300])
            return None
        if value is None:
            return None
        self._found.add(key)
        return value.decode() if isinstance(value, bytes) else str(value)

    def clear(self, attempt: Attempt) -> None:
        """The attempt has ended: nothing of it runs now, and a published mark of it can only
        mislead from now on."""
        if self._file is not None and self._pid == os.getpid():
            with suppress(Exception):
                self._file.clear()
        key = self._key(attempt)
        if key in self._found:
            self._found.discard(key)
            try:
                self.client.delete(key)
            except Exception as exc:
                log.warning("running_mark_failed", error=repr(exc)[:300])

    def close(self) -> None:
        """Remove this process's mark file (a process that exits cleanly leaves nothing to publish)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
            self._file = None


_MARKS: dict[int, RunningMarks] = {}


@cache
def redis_client_options() -> dict[str, Any]:
    """Options for the Redis clients a pool process builds (the running marks, the near-duplicate
    index): the client's description for CLIENT SETINFO, built once. Without it, redis-py builds
    one per client and looks its own version up in the installed packages' metadata each time
    (about 0.6 ms of CPU, twice in a new pool process's first batch); called before the pool forks,
    every pool process inherits it."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # an older redis-py, which has no such lookup
        return {}
    return {"driver_info": DriverInfo()}


def running_marks(settings: Any) -> RunningMarks | None:
    """This process's :class:`RunningMarks` (None without Redis: the embedded worker runs in the
    producer's process, and nothing of it survives a crash anyway). In a worker node's main
    process it is what publishes its dead pool processes' marks."""
    if settings.redis_url is None:
        return None
    pid = os.getpid()
    if pid not in _MARKS:
        import redis

        _MARKS.clear()  # a fork's inherited client is not this process's
        url = settings.redis_url.get_secret_value()
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                      **redis_client_options())
        # A published mark must outlive the wait of a requeued message for its redelivery (a
        # backlog can be long).
        ttl = max(86400, 3 * settings.visibility_timeout)
        _MARKS[pid] = RunningMarks(client, settings.redis_prefix, ttl=ttl, where=marks.directory(url))
    return _MARKS[pid]


def close_running_marks() -> None:
    """A pool process that exits cleanly removes its mark file."""
    own = _MARKS.get(os.getpid())
    if own is not None:
        own.close()


def publish_lost_mark(settings: Any, pid: int | None, task_id: str) -> str | None:
    """Pool process ``pid`` died running task ``task_id``: publish the delivery it was running, for
    the redelivered message (called by the worker node's main process before it requeues it)."""
    own = running_marks(settings)
    if own is None or not pid:
        return None
    try:
        delivery_id = marks.publish_lost(own.client, pid, task_id, own.ttl, own.where)
    except Exception as exc:  # Redis away: the attribution is lost, nothing else
        log.warning("running_mark_failed", error=repr(exc)[:300], task_id=task_id, pid=pid)
        return None
    if delivery_id is not None:
        log.warning("running_mark_published", task_id=task_id, pid=pid, delivery_id=delivery_id)
    return delivery_id


def sweep_running_marks(settings: Any) -> list[str]:
    """Publish the marks that processes of this machine left when they died with their worker
    node (called as a worker node starts)."""
    own = running_marks(settings)
    if own is None:
        return []
    try:
        return marks.sweep(own.client, own.ttl, own.where)
    except Exception as exc:
        log.warning("running_mark_failed", error=repr(exc)[:300])
        return []


class AttemptRunner:
    """Runs one attempt at one batch message (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], attempt: Attempt, *, max_attempts: int,
                 delivery_time_limit: float, propagate: tuple[type[BaseException], ...] = (),
                 before: Callable[[DeliveryMessage], None] | None = None,
                 neardup_index: CandidateIndex | None = None, neardup_window_days: int = 7,
                 marks: RunningMarks | None = None, first_time_limit: float | None = None,
                 times: RecentTimes | None = None, stall_limit: float = 0.0) -> None:
        self.sessions = sessions
        # The shared near-duplicate index (None: near-duplicates are not looked for).
        self.neardup_index = neardup_index
        self.neardup_window_days = neardup_window_days
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.delivery_time_limit = delivery_time_limit
        # The limit of deliveries that never failed (batch mode), see RecentTimes; and where the
        # times of their work go.
        self.first_time_limit = delivery_time_limit if first_time_limit is None else \
            min(first_time_limit, delivery_time_limit)
        self.times = times
        # A batch step's computation that stays off the CPU this long is blocked (see deadline).
        self.stall_limit = stall_limit
        # The limit of the delivery running now (the full one for suspects, run alone), and
        # whether it runs in batch mode.
        self._limit = delivery_time_limit
        self._together = False
        # Interruptions that end the delivery's attempt rather than quarantining it on the spot.
        self.propagate: tuple[type[BaseException], ...] = (DeliveryTimeout, *propagate)
        self.before = before
        self.marks = marks
        self.plan: Plan | None = None
        # The delivery running now, so an interruption can be charged to it alone.
        self.current: str | None = None
        # Execution records of this attempt started and not yet finished, by delivery id.
        self.open: dict[str, int] = {}

    @contextmanager
    def around(self, msg: DeliveryMessage, *, io: bool = True) -> Iterator[None]:
        """Run one delivery's own work (``io``: whether it waits on the database) under its
        deadline, marked as the one running."""
        self.current = msg.delivery_id
        if self.marks is not None and not self.marks.mark(self.attempt, msg.delivery_id):
            self.marks = None  # Redis is away: no more round trips this attempt
        limit, together = self._limit, self._together
        started = time.perf_counter()
        with deadline(limit, "" if limit >= self.delivery_time_limit else " (a first attempt's limit)",
                      stall=self.stall_limit if together and not io else 0.0):
            if self.before is not None:
                self.before(msg)
            yield
        if together and not io and self.times is not None:
            # Batch mode's computation only: a delivery run on its own includes its database work.
            self.times.add(time.perf_counter() - started)
        self.current = None

    def begin(self, batch: IngestBatch) -> Plan:
        """Step 1 (own transaction): what to skip, what to quarantine, what runs together and
        what runs alone."""
        ids = [d.delivery_id for d in batch.deliveries]
        lost_while = self.marks.read(self.attempt) if self.marks is not None else None
        with self.sessions.begin() as session:
            a = self.attempt
            ledger.settle_retried(session, task_id=a.task_id, attempt=a.attempt)
            if lost_while is not None and lost_while in ids:
                # This message's earlier run died while it ran ``lost_while``: the lost attempt is
                # charged to it alone, not to the others that run had started.
                relieved = ledger.attribute_lost(session, task_id=a.task_id, attempt=a.attempt,
                                                 culprit=lost_while)
                if relieved:
                    log.warning("attempt_lost_attributed", delivery_id=lost_while, relieved=relieved)
            else:
                lost_while = None
            done = queries.processed_deliveries(session, ids)
            todo = [d for d in batch.deliveries if d.delivery_id not in done]
            past = ledger.history(session, (d.delivery_id for d in todo))
            poison = [(d, past[d.delivery_id]) for d in todo
                      if d.delivery_id in past and past[d.delivery_id].failed >= self.max_attempts]
            poisoned = {d.delivery_id for d, _ in poison}
            todo = [d for d in todo if d.delivery_id not in poisoned]
            # Deliveries with fewer failed attempts first: one that keeps killing its worker then
            # cannot hold back the deliveries queued behind it in the same message.
            suspects = sorted((d for d in todo if d.delivery_id in past),
                              key=lambda d: past[d.delivery_id].failed)
            together = [d for d in todo if d.delivery_id not in past]
            plan = Plan(todo=together + suspects, skipped=len(done), poison=poison, isolated=bool(suspects),
                        suspects=suspects, lost_while=lost_while)
            if together:
                plan.exec_ids = self._start(session, [d.delivery_id for d in together])
                self.open = dict(plan.exec_ids)
        self.plan = plan
        return plan

    def _start(self, session: Session, ids: list[str]) -> dict[str, int]:
        a = self.attempt
        return ledger.start_executions(session, delivery_ids=ids, task_id=a.task_id, attempt=a.attempt,
                                       worker=a.worker, pid=a.pid)

    def quarantine_poison(self) -> int:
        """Quarantine the deliveries that failed ``max_attempts`` times (own transaction)."""
        assert self.plan is not None
        if not self.plan.poison:
            return 0
        stored = 0
        with self.sessions.begin() as session:
            for msg, past in self.plan.poison:
                code, message = quarantine_reason(past)
                with session.begin_nested():
                    if pipeline.store_rejected(session, msg, code=code, message=message, raw=None,
                                               tb=past.last_error):
                        stored += 1
                exec_id = self._start(session, [msg.delivery_id])[msg.delivery_id]
                ledger.finish_executions(session, {exec_id: ("quarantined", None)})
                log.error("delivery_quarantined", delivery_id=msg.delivery_id, code=code,
                          attempts=past.failed)
        return stored

    def run(self) -> Result:
        """Steps 2-3: the deliveries that never failed together (:meth:`run_together`), then each
        suspect alone (:meth:`run_alone`). The caller retries the message for the failed ones.

        When the message had both, the suspects are not run now but deferred to that retry (at
        :data:`SUSPECT_PRIORITY`): a delivery that crashed or hung a worker before would likely
        do it again, and its next attempts then take a worker only once nothing else waits."""
        assert self.plan is not None
        result = Result()
        self.run_together(result)
        if self.plan.suspects and self.plan.together:
            result.deferred = [d.delivery_id for d in self.plan.suspects]
        else:
            self.run_alone(result)
        if self.marks is not None:
            # Everything of this attempt is committed: its mark can only mislead from now on.
            self.marks.clear(self.attempt)
        return result

    # The task calls one or the other by the plan's mode; both run the whole plan.
    run_batch = run
    run_isolated = run

    def run_together(self, result: Result) -> None:
        """Batch mode: the deliveries that never failed, in one transaction, with their execution
        records finished in it.

        A delivery that times out or raises past the pipeline's own handling (its savepoint is
        rolled back) is charged alone and the batch goes on; the caller retries the message for it.
        A task-level interruption or a transient error propagates, and the whole batch is retried.
        """
        assert self.plan is not None
        together = self.plan.together
        if not together:
            return
        finished: dict[int, tuple[str, str | None]] = {}
        stage_lines: list[pipeline.StageLine] = []
        with self.sessions.begin() as session:
            # The pipeline writes the batch with a few statements and charges a delivery whose
            # own work times out or raises (under self.around) alone, as status "failed".
            self._limit, self._together = self.first_time_limit, True
            try:
                with alarm_handler():
                    outcomes = pipeline.process_batch(session, IngestBatch(deliveries=together),
                                                      propagate=self.propagate, around=self.around,
                                                      timeouts=(DeliveryTimeout,),
                                                      neardup_index=self.neardup_index,
                                                      neardup_window_days=self.neardup_window_days,
                                                      stage_lines=stage_lines)
            finally:
                self._limit, self._together = self.delivery_time_limit, False
            self.current = None
            for outcome in outcomes:
                exec_id = self.plan.exec_ids[outcome.delivery_id]
                if outcome.status == "failed":
                    assert outcome.failure is not None
                    finished[exec_id] = (outcome.failure, outcome.error)
                    result.failed.append(outcome.delivery_id)
                    last_line = (outcome.error or "").strip().splitlines()[-1:] or [""]
                    log.warning("delivery_attempt_failed", delivery_id=outcome.delivery_id,
                                outcome=outcome.failure, error=last_line[0][:300])
                    continue
                finished[exec_id] = (_exec_outcome(outcome), None)
                result.outcomes.append(outcome)
            ledger.finish_executions(session, finished)
        self.open.clear()
        # Committed: the batch's stage lines now report what is stored.
        pipeline.write_stage_lines(stage_lines)

    def _charge(self, outcome: str) -> tuple[str, str | None]:
        """The record of a delivery that failed this attempt (called while its error is handled)."""
        error = traceback.format_exc(limit=20)
        log.warning("delivery_attempt_failed", delivery_id=self.current, outcome=outcome,
                    error=error.strip().splitlines()[-1][:300])
        self.current = None
        return outcome, error

    def run_alone(self, result: Result) -> None:
        """Isolated mode: each suspect alone, charged and committed on its own.

        A delivery that times out or raises has its attempt recorded and the next one runs; the
        caller retries the message for the failed ones. A task-level interruption or a transient
        error propagates; the caller then finishes the running delivery's record
        (:meth:`fail_current`).
        """
        assert self.plan is not None
        for msg in self.plan.suspects:
            with structlog.contextvars.bound_contextvars(delivery_id=msg.delivery_id,
                                                         correlation_id=msg.correlation_id):
                with self.sessions.begin() as session:
                    exec_id = self._start(session, [msg.delivery_id])[msg.delivery_id]
                self.plan.exec_ids[msg.delivery_id] = exec_id
                self.open[msg.delivery_id] = exec_id
                failure: tuple[str, str | None] | None = None
                with self.sessions() as session:
                    # A lost index is rebuilt before the delivery's transaction locks anything.
                    neardup_stage.ensure_index(session, self.neardup_index, self.neardup_window_days)
                with self.sessions.begin() as session:
                    try:
                        with self.around(msg):
                            outcome = pipeline.process_one(session, msg, propagate=self.propagate,
                                                           neardup_index=self.neardup_index)
                    except DeliveryTimeout:
                        failure = self._charge("timeout")
                    except Exception as exc:
                        if pipeline.is_transient(exc) or isinstance(exc, self.propagate):
                            raise
                        failure = self._charge("error")
                    ledger.finish_executions(session, {exec_id: failure or (_exec_outcome(outcome), None)})
                self.open.pop(msg.delivery_id, None)
                if failure is not None:
                    result.failed.append(msg.delivery_id)
                    continue
                result.outcomes.append(outcome)

    def fail_current(self, outcome: str, *, others: str = "retry") -> None:
        """Finish the records of an interrupted attempt: the running delivery gets ``outcome``
        (with the traceback being handled), the others still open ``others``."""
        if self.plan is None:
            return
        error = traceback.format_exc(limit=20)
        current = self.current
        self.current = None
        finished: dict[int, tuple[str, str | None]] = {}
        for delivery_id, exec_id in self.open.items():
            finished[exec_id] = (outcome, error) if delivery_id == current else (others, None)
        self.open = {}
        try:
            with self.sessions.begin() as session:
                ledger.finish_executions(session, finished)
        except Exception as exc:
            # The database is away: the next attempt settles these (ledger.settle_retried) or
            # counts them as unfinished, which errs toward quarantining a little early.
            log.warning("executions_not_finished", error=repr(exc), current=current)
        if current is not None and outcome in ("timeout", "error"):
            log.warning("delivery_attempt_failed", delivery_id=current, outcome=outcome,
                        error=error.strip().splitlines()[-1][:300])

    def quarantine_rest(self, code: str, message: str) -> int:
        """Quarantine every delivery of the plan not committed yet (retries exhausted)."""
        assert self.plan is not None
        stored = 0
        with self.sessions.begin() as session:
            done = queries.processed_deliveries(session, (d.delivery_id for d in self.plan.todo))
            for msg in self.plan.todo:
                if msg.delivery_id in done:
                    continue
                with session.begin_nested():
                    if pipeline.store_rejected(session, msg, code=code, message=message, raw=None):
                        stored += 1
        return stored


def _exec_outcome(outcome: pipeline.Outcome) -> str:
    return "skipped" if outcome.status == "already_processed" else "stored"


# --- dead-letter queue -------------------------------------------------------------------------


def rebuild_message(row: Any) -> DeliveryMessage | None:
    """The delivery message of a quarantined delivery row, as it was published (None if the row
    has no record to rebuild it from, e.g. a message that never validated)."""
    if row.body is None:
        return None
    record = row.record or {}
    extra = dict(record.get("extra") or {})
    original = extra.pop("original", None)
    title, body = row.title, row.body
    if isinstance(original, dict):
        # Publish what the source sent; the worker sanitizes it again.
        title, body = original.get("title"), original.get("body") or body
    published = record.get("published_at")
    return DeliveryMessage(
        delivery_id=row.id, received_at=row.received_at or datetime.now(UTC),
        correlation_id=row.correlation_id, run_id=row.run_id,
        record=Delivery(id=row.source_id or row.id, body=body, source=row.source, title=title,
                        url=record.get("url"),
                        published_at=datetime.fromisoformat(published) if published else None,
                        language=record.get("language"), format=row.format, extra=extra),
    )


def replay_quarantined(settings: Any, publisher: Any, *, reason: str | None = None,
                       delivery_ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
    """Publish quarantined deliveries again (``akhbar dlq replay``), under their own delivery ids.

    In one transaction, each delivery leaves the store, its earlier attempts stop counting toward
    quarantine, and the publish ledger gets it back as unsettled; then it is published. If this
    process dies in between, the reconciler publishes it (it is in the ledger and not in the store).
    Deliveries that cannot be rebuilt (a message that never validated) stay where they are.
    """
    import uuid

    from models.session import session_scope
    from producers.publish import ledger_rows

    queue = settings.queue_bulk
    sends: list[tuple[str, list[DeliveryMessage]]] = []
    with session_scope(settings.database_url, write=True) as session:
        rows = ledger.quarantined(session, codes=QUARANTINE_CODES, reason=reason, limit=limit)
        wanted = set(delivery_ids) if delivery_ids else None
        messages = [m for r in rows if (wanted is None or r.id in wanted) and (m := rebuild_message(r))]
        released: list[dict[str, Any]] = []
        for start in range(0, len(messages), settings.batch_size):
            batch = messages[start:start + settings.batch_size]
            task_id = str(uuid.uuid4())
            sends.append((task_id, batch))
            released.extend(ledger_rows(batch, queue=queue, task_id=task_id))
        ledger.release_quarantined(session, released)
    for task_id, batch in sends:
        publisher.send(batch, queue=queue, task_id=task_id, record=False)
    ids = [m.delivery_id for _, batch in sends for m in batch]
    log.info("quarantine_replayed", deliveries=len(ids), reason=reason)
    return ids
