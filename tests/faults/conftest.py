"""Fixtures of the fault tier: private servers for the session, a fresh environment per test, and
the accounting every test reports (Jepsen's total-queue checker: lost, duplicated, unexpected)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
import pytest
from sqlalchemy import func, select

from tests.conftest import read_corpus
from tests.faults.harness import Env, Servers

REPORT_ENV = "AKHBAR_FAULTS_REPORT"
# Deliveries per second measured by the baseline scenario, for scenarios that compare against it.
THROUGHPUT: dict[str, float] = {}


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    if os.geteuid() != 0:
        pytest.fail("the fault tier runs PostgreSQL through `runuser -u postgres`, which needs root")
    started = Servers().start()
    try:
        yield started
    finally:
        started.close()


# How much of each worker's log a failed test shows (its last lines).
FAILED_LOG_TAIL = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed fault test keeps its logs: the session removes its server directories at the end,
    and a scenario that hangs or loses a delivery is explained by what its workers logged. The
    report gains each log's last lines and the directory the whole logs were copied to."""
    outcome = yield
    rep = outcome.get_result()
    environment = getattr(item, "funcargs", {}).get("env")
    if not rep.failed or not isinstance(environment, Env):
        return
    kept = Path(tempfile.gettempdir()) / "akhbar-faults-failed" / f"{environment.db}-{rep.when}"
    paths = sorted(environment.logs.glob("*.log"))
    try:
        shutil.copytree(environment.logs, kept, dirs_exist_ok=True)
        for server_log in (environment.pg.log, environment.redis.dir / "redis.log"):
            if server_log.exists():
                shutil.copy(server_log, kept / server_log.name)
        where = f"copied to {kept}"
    except OSError as exc:
        where = f"not copied: {exc}"
    for path in paths:
        lines = path.read_text(errors="replace").splitlines()[-FAILED_LOG_TAIL:]
        rep.sections.append((f"{path.name} (last {len(lines)} lines)", "\n".join(lines)))
    rep.sections.append(("fault tier logs", where))


@pytest.fixture()
def env(servers: Servers, request: pytest.FixtureRequest) -> Iterator[Env]:
    """A fresh database (cloned from the migrated template), an empty broker, no workers yet."""
    name = request.node.name.removeprefix("test_").replace("[", "_").replace("]", "")
    environment = servers.new_env(name)
    try:
        yield environment
    finally:
        # No need for a graceful stop: the next test has its own database and an empty broker.
        for worker in environment.workers:
            worker.kill()
        from models.session import _engines

        for key in [k for k in _engines if environment.db in k[0]]:
            _engines.pop(key).dispose()


# --- deliveries --------------------------------------------------------------------------------

_CORPUS: list[dict[str, Any]] = []


def corpus(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` corpus articles as input records (read once per session)."""
    if len(_CORPUS) < offset + n:
        _CORPUS[:] = read_corpus(offset + n)
    rows = []
    for article in _CORPUS[offset : offset + n]:
        parts = article["id"].split("/")
        source = parts[2] if article["source_dataset"] == "SaudiNewsNet" else article["source_dataset"]
        rows.append(
            {
                "id": article["id"],
                "title": article["title"],
                "body": article["body"],
                "source": source,
                "url": article["url"],
            }
        )
    return rows


def to_items(records: list[dict[str, Any]]) -> list[Any]:
    """Input records through the input contract, as a producer would."""
    from producers.records import build_delivery

    return [build_delivery(r, default_source="faults", raw=orjson.dumps(r)) for r in records]


def with_duplicates(records: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """``records`` with ``share`` of them planted again as exact duplicates (same text, new id),
    each placed right after a later article so it races its original in another batch."""
    out = list(records)
    step = max(1, round(1 / share))
    for i, record in enumerate(records[::step]):
        copy = dict(record, id=f"{record['id']}#dup{i}")
        out.insert(min(len(out), (i + 1) * step + i + 10), copy)
    return out


# --- accounting --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a fault test reports; ``lost`` = sent - stored - matched - quarantined - rejected."""

    test: str
    sent: int = 0
    stored: int = 0
    matched: int = 0
    quarantined: int = 0
    rejected: int = 0
    lost: int = 0
    stored_duplicates: int = 0
    redeliveries: int = 0
    overlapping: int = 0
    double_effects: int = 0
    recovery_s: float | None = None
    settle_s: float | None = None
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def account(env: Env, sent_ids: list[str], test: str, expected_hashes: set[str] | None = None) -> Figures:
    """Compare what was sent with what the store holds (as the application role)."""
    from models import Delivery, Story
    from models.ledger import execution_stats
    from models.session import session_factory
    from worker.quarantine import QUARANTINE_CODES

    figures = Figures(test=test, sent=len(sent_ids))
    ids = set(sent_ids)
    statuses: dict[str, tuple[str, str | None]] = {}
    sessions = session_factory(env.database_url)
    with sessions() as session:
        for chunk in _chunked(sorted(ids), 5000):
            rows = session.execute(
                select(Delivery.id, Delivery.status, Delivery.error["code"].as_string()).where(
                    Delivery.id.in_(chunk)
                )
            )
            statuses.update({r[0]: (r[1], r[2]) for r in rows})
        story_hashes = session.execute(select(Story.content_hash)).scalars().all()
        source_keys = session.execute(select(Story.source, Story.source_id)).all()
        figures.stored_duplicates = (len(story_hashes) - len(set(story_hashes))) + (
            len(source_keys) - len(set(source_keys))
        )
        stats = execution_stats(session)
    for status, code in statuses.values():
        if status in ("new", "update"):
            figures.stored += 1
        elif status in ("duplicate", "near_duplicate"):
            figures.matched += 1
        elif code in QUARANTINE_CODES:
            figures.quarantined += 1
        else:
            figures.rejected += 1
    figures.lost = len(ids - statuses.keys())
    figures.redeliveries = stats["redeliveries"]
    figures.overlapping = stats["overlapping"]
    figures.double_effects = stats["double_effects"]
    if expected_hashes is not None:
        # Every distinct text is stored exactly once: as a new story, or as a near-duplicate or a
        # new version of one (the content hashes of those deliveries), never twice, none missing.
        with sessions() as session:
            kept = session.scalars(
                select(Delivery.content_hash).where(Delivery.status.in_(("new", "near_duplicate", "update")))
            ).all()
        figures.notes["texts_expected"] = len(expected_hashes)
        figures.notes["texts_kept"] = len(kept)
        figures.notes["texts_kept_twice"] = len(kept) - len(set(kept))
        figures.notes["texts_missing"] = len(expected_hashes - set(kept))
        figures.notes["stories"] = len(story_hashes)
    return figures


def _chunked(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def committed_count(env: Env, run_id: str | None = None) -> int:
    from models import Delivery
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        stmt = select(func.count()).select_from(Delivery)
        if run_id is not None:
            stmt = stmt.where(Delivery.run_id == run_id)
        return int(session.scalar(stmt) or 0)


class _Sampler:
    """Calls ``sample()`` every ``interval`` seconds in a thread, for the duration of a ``with``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


class Progress(_Sampler):
    """Samples the committed count in a thread, to measure when commits stop and resume."""

    def __init__(self, env: Env, run_id: str | None, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.env = env
        self.run_id = run_id
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> None:
        # The database is down on purpose in some tests.
        with contextlib.suppress(Exception):
            self.samples.append((time.monotonic(), committed_count(self.env, self.run_id)))

    @property
    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def resumed_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` until the committed count first grew past its value then."""
        before = [c for t, c in self.samples if t <= moment]
        base = before[-1] if before else 0
        for t, c in self.samples:
            if t > moment and c > base:
                return round(t - moment, 2)
        return None


class CpuMeter(_Sampler):
    """Samples the CPU time of the workers and of the PostgreSQL server in a thread, so that the
    CPU a stretch of a run cost can be read afterwards for any interval of wall-clock time (for
    workers and a server that are not restarted meanwhile: a new process starts from zero)."""

    def __init__(self, env: Env, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.env = env
        # (time.time(), workers' CPU seconds, PostgreSQL's CPU seconds), cumulative.
        self.samples: list[tuple[float, float, float]] = []

    def sample(self) -> None:
        workers = sum(w.cpu_seconds() for w in self.env.workers)
        self.samples.append((time.time(), workers, self.env.pg.cpu_seconds()))

    def _at(self, moment: float) -> tuple[float, float]:
        """Cumulative (workers, PostgreSQL) CPU seconds at ``moment``, interpolated."""
        import bisect

        i = bisect.bisect_left(self.samples, (moment,))
        if i == 0 or i == len(self.samples):
            raise ValueError("moment outside the sampled interval")
        (t0, w0, p0), (t1, w1, p1) = self.samples[i - 1], self.samples[i]
        share = (moment - t0) / (t1 - t0)
        return w0 + (w1 - w0) * share, p0 + (p1 - p0) * share

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(workers, PostgreSQL) CPU seconds spent from ``start`` to ``end`` (``time.time()``)."""
        a, b = self._at(start), self._at(end)
        return b[0] - a[0], b[1] - a[1]


def wait_committed(
    env: Env, run_id: str | None, total: int, timeout: float, tick: Callable[[], None] | None = None
) -> bool:
    """Wait until ``total`` deliveries of ``run_id`` are committed; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if committed_count(env, run_id) >= total:
                return True
        except Exception:
            pass
        if tick is not None:
            tick()
        time.sleep(0.25)
    return False


def report(figures: Figures) -> None:
    """Print the figures as a table and append them to ``$AKHBAR_FAULTS_REPORT`` (JSON lines)."""
    row = asdict(figures)
    notes = row.pop("notes")
    width = max(len(k) for k in row)
    print(f"\n--- {figures.test} ---")
    for key, value in row.items():
        if key != "test":
            print(f"  {key:<{width}}  {value}")
    for key, value in notes.items():
        print(f"  {key:<{width}}  {value}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with Path(path).open("ab") as fh:
            fh.write(orjson.dumps(row | {"notes": notes}) + b"\n")


def assert_guarantees(figures: Figures) -> None:
    assert figures.lost == 0, figures
    assert figures.stored_duplicates == 0, figures
    assert figures.double_effects == 0, figures


# --- running a scenario ------------------------------------------------------------------------


@dataclass
class Run:
    """Deliveries published for one scenario."""

    env: Env
    run_id: str
    ids: list[str]
    started: float
    publisher: Any

    def wait(self, timeout: float, tick: Callable[[], None] | None = None) -> bool:
        return wait_committed(self.env, self.run_id, len(set(self.ids)), timeout, tick)

    def committed(self) -> int:
        return committed_count(self.env, self.run_id)


def publish(env: Env, records: list[dict[str, Any]], *, run_id: str | None = None, **settings: Any) -> Run:
    """Publish ``records`` through the real publisher (ledger first, then the broker)."""
    import uuid

    from producers.publish import Publisher

    publisher = Publisher(env.settings(**settings))
    run_id = run_id or uuid.uuid4().hex
    started = time.monotonic()
    ids = publisher.publish(to_items(records), run_id=run_id)
    return Run(env=env, run_id=run_id, ids=ids, started=started, publisher=publisher)


def unfinished_report(env: Env, run: Run, limit: int = 30) -> str:
    """Why ``run`` is not all committed: its deliveries without a row, the execution records of the
    first ``limit`` of them, then what each live worker is doing (stacks and log tail)."""
    from models import Delivery, Execution
    from models.session import session_factory

    ids = sorted(set(run.ids))
    with session_factory(env.database_url)() as session:
        done: set[str] = set()
        for chunk in _chunked(ids, 5000):
            done.update(session.scalars(select(Delivery.id).where(Delivery.id.in_(chunk))))
        missing = [i for i in ids if i not in done]
        rows = session.execute(
            select(Execution.delivery_id, Execution.worker, Execution.pid, Execution.task_id,
                   Execution.attempt, Execution.started_at, Execution.outcome)
            .where(Execution.delivery_id.in_(missing[:limit]))
            .order_by(Execution.delivery_id, Execution.started_at)
        ).all()
    lines = [f"{len(missing)} of {len(ids)} deliveries not committed; records of the first {limit}:"]
    lines += [" ".join(str(v) for v in row) for row in rows]
    for worker in env.workers:
        if worker.alive():
            lines.append(f"--- {worker.name} ---\n{worker.stuck_report()}")
    return "\n".join(lines)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def recovery(env: Env, fault_at: Any, *, caught: str, since: Any = None, until: Any = None) -> float | None:
    """Seconds from ``fault_at`` (UTC) until the last delivery caught by the fault was committed.

    ``caught`` says which deliveries the fault caught: ``unfinished`` (an attempt whose worker died,
    started after ``since``: left without an outcome, or settled as a retry afterwards),
    ``repeated`` (attempted more than once), ``republished`` (published again by the reconciler)
    or ``retried`` (an attempt ended for a retry).
    """
    from models import Delivery, Execution, PublishedDelivery
    from models.session import session_factory

    if caught == "unfinished":
        # An attempt its worker's death interrupted stays without an outcome, or is settled as a
        # retry when the message runs again: by attribute_lost (the batch-mates of the delivery
        # that was running) or by settle_retried (every record of an attempt that died before any
        # delivery was marked as running, whose deliveries were then retried as suspects).
        which = select(Execution.delivery_id).where(
            Execution.outcome.is_(None) | (Execution.outcome == "retry"))
        if since is not None:
            which = which.where(Execution.started_at >= since)
        if until is not None:
            which = which.where(Execution.started_at <= until)
    elif caught == "repeated":
        which = select(Execution.delivery_id).group_by(Execution.delivery_id).having(func.count() > 1)
    elif caught == "republished":
        which = select(PublishedDelivery.delivery_id).where(PublishedDelivery.sends > 1)
    elif caught == "retried":
        which = select(Execution.delivery_id).where(Execution.outcome == "retry")
    else:
        raise ValueError(caught)
    with session_factory(env.database_url)() as session:
        last = session.scalar(select(func.max(Delivery.processed_at)).where(Delivery.id.in_(which)))
    return None if last is None else round((last - fault_at).total_seconds(), 2)


def quiet(run: Run, seconds: float, timeout: float) -> int:
    """Wait until the committed count of ``run`` has not changed for ``seconds``; return it."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = run.committed()
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= seconds or count >= len(set(run.ids)):
            return count
        time.sleep(0.25)
    return last


def utcnow() -> Any:
    from models.base import utcnow as now

    return now()


def expected_hashes(records: list[dict[str, Any]]) -> set[str]:
    """Content hashes of ``records`` as the workers store them (after the worker-side input guards,
    which strip bidi controls: two corpus articles among the first 10,000 carry some, and their
    stored text hashes differ from the text as sent), computed here independently of the workers."""
    from datetime import UTC, datetime

    from akhbar.settings import Settings
    from worker.guards import check
    from worker.messages import Delivery as Record
    from worker.messages import DeliveryMessage
    from worker.stages.normalize import normalize

    settings = Settings()
    out = set()
    for item in to_items(records):
        if isinstance(item, Record):
            msg = check(DeliveryMessage(delivery_id="expected", received_at=datetime.now(UTC),
                                        correlation_id="expected", record=item), settings)
            if msg.record is not None:
                item = msg.record
            out.add(normalize(title=item.title, body=item.body, format=item.format).content_hash)
    return out


def executions_since(env: Env, worker: str, since: Any) -> int:
    """Attempts started by worker node ``worker`` (e.g. ``w1``) since ``since`` (UTC)."""
    from models import Execution
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Execution)
                .where(Execution.worker.like(f"{worker}@%"), Execution.started_at >= since)
            )
            or 0
        )


def running_on(env: Env, worker: str, since: Any = None) -> bool:
    """Whether worker node ``worker`` is inside an attempt right now: an unfinished record of it,
    started after ``since`` (UTC) when given, so that a record left unfinished by an earlier,
    killed incarnation of the same node does not count."""
    from models import Execution
    from models.session import session_factory

    with session_factory(env.database_url)() as session:
        return bool(
            session.scalar(
                select(func.count())
                .select_from(Execution)
                .where(
                    Execution.worker.like(f"{worker}@%"),
                    Execution.outcome.is_(None),
                    *(() if since is None else (Execution.started_at >= since,)),
                )
            )
        )
