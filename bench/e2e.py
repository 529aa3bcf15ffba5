"""End-to-end throughput: producer -> Redis -> worker processes -> PostgreSQL, against a naive design.

    uv run python -m bench.e2e [--json] [--deliveries 20000] [--workers 2]

What one invocation does, each scenario on a fresh PostgreSQL database and a private Redis key
prefix (both removed afterwards), with real worker processes started the way a deployment starts
them (``akhbar worker --concurrency N``):

1. builds the deliveries from the development corpus: every article (17,363) plus generated
   re-deliveries, surface variants (exact duplicates of the match form) and edited reprints
   (near-duplicates and updates), in arrival order, as JSON lines of the input contract;
2. measures the bytes per story the queue holds, Celery's default JSON (one message per story)
   against akhbar's micro-batches;
3. **naive baseline** (:mod:`bench.naive`) on the first ``--naive-deliveries`` of the same
   deliveries: one message per story, two prefork processes, its own tables; run again after the
   throughput scenario (unless ``--no-naive-after``), and the ratio is akhbar's stories/s over the
   baseline's two runs together (all their stories over all their time), so that the machine's
   drift during the benchmark does not fall on one side only;
4. **throughput**: the producer parses and publishes every delivery as fast as it can (as
   ``akhbar replay`` does) while ``--workers`` processes consume; stories/s is deliveries over the
   time from the first publish to the last commit;
5. **scaling**: the same with one worker process;
6. **latency**: deliveries published at a steady rate on the live queue in micro-batches of up to
   ``batch_size`` or ``batch_ms`` (as a live source is), p50/p95/p99 of ``processed_at -
   received_at`` (the producer stamps ``received_at`` when it wraps the delivery; the worker
   stamps ``processed_at`` in the transaction that commits it);
7. **embedded mode**: ``akhbar replay`` of the whole corpus on SQLite, no servers.

Per-stage costs are the medians of the workers' own ``stage_completed`` log lines; worker RSS is
sampled from the pool processes during the run. Progress goes to stderr; the table (or, with
``--json``, one JSON object) to stdout. Absolute figures drift on a shared machine: the ratios,
measured in the same invocation, are the comparison that holds.

Corpus: SaudiNewsNet (CC BY-NC-SA 4.0), SANAD (CC BY 4.0); see ../shared/corpus/SOURCES.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
import redis

from bench.corpus_variants import dateline_edit, reword_title, sentence_drop, surface_variant, typo_edit
from producers.records import parse_json_record, split_paragraphs
from worker.messages import Delivery, Rejection

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "articles.jsonl.gz"
PG_ADMIN_URL = os.environ.get("AKHBAR_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AKHBAR_BENCH_REDIS", "redis://127.0.0.1:6379/0")

# Share of corpus articles among the deliveries (the rest are generated variants): with the whole
# corpus (17,363 articles) in 20,000 deliveries, one delivery in about eight is a variant.
ORIGINAL_SHARE = 0.87
# Generated variants: (kind, weight). A re-delivery repeats the record (same source and id); a
# surface variant changes harakat, alef forms, tatweel and digits (same match form) under another
# outlet's id; the edits are near-duplicates (typo, reprint with a new dateline and headline) and
# updates (a paragraph removed).
VARIANTS = (
    ("redelivery", 0.2),
    ("surface", 0.25),
    ("typo", 0.15),
    ("reprint", 0.25),
    ("paragraph_removed", 0.15),
)
OUTLETS = ("alriyadh", "aljazirah", "alyaum", "okaz", "aawsat", "alwatan", "almadina", "sabq")
# A variant arrives after its original, within this many deliveries.
VARIANT_SPREAD = 400

STAGES = ("normalize", "dedup", "neardup", "enrich", "persist")
# Table order of the stages of both designs (the naive one names its steps exact and commit).
ORDER = ("normalize", "exact", "dedup", "neardup", "enrich", "persist", "commit")


def progress(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# deliveries


def corpus_records(path: Path = CORPUS) -> list[dict[str, Any]]:
    """Every corpus article as a record of the JSON input contract, in corpus order."""
    if not path.exists():
        raise SystemExit(
            f"the development corpus is missing: expected {path} (see ../shared/corpus/SOURCES.md)"
        )
    records = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            parts = row["id"].split("/")
            source = parts[2] if row["source_dataset"] == "SaudiNewsNet" else row["source_dataset"]
            records.append(
                {
                    "id": row["id"],
                    "title": row["title"],
                    "body": row["body"],
                    "source": source,
                    "url": row["url"],
                    "published_at": row["date"].replace(" ", "T") if row["date"] else None,
                    "category": row["category"],
                }
            )
    return records


def _variant(record: dict[str, Any], kind: str, serial: int, rnd: random.Random) -> dict[str, Any]:
    if kind == "redelivery":
        return record
    paragraphs = split_paragraphs(record["body"] or "") or [record["body"] or ""]
    title = record["title"] or ""
    other = rnd.choice([o for o in OUTLETS if o != record["source"]])
    out = dict(record, id=f"{record['id']}#{kind}{serial}")
    if kind == "surface":
        out.update(
            source=other,
            title=surface_variant(title, rnd) if title else record["title"],
            body="\n".join(surface_variant(p, rnd) for p in paragraphs),
        )
    elif kind == "typo":
        out["body"] = "\n".join(typo_edit(paragraphs, rnd, rnd.randint(1, 3)))
    elif kind == "reprint":
        edited = dateline_edit(typo_edit(paragraphs, rnd, 1), rnd)
        out.update(
            source=other,
            body="\n".join(edited),
            title=reword_title(title, rnd) if len(title.split()) >= 3 else record["title"],
        )
    elif kind == "paragraph_removed":
        kept = paragraphs[:-1] if len(paragraphs) >= 3 else sentence_drop(paragraphs, rnd) or paragraphs
        out["body"] = "\n".join(kept)
    return out


def build_records(
    n: int, seed: int = 7, corpus: list[dict[str, Any]] | None = None
) -> tuple[list[bytes], Counter[str]]:
    """``n`` deliveries as JSON lines in arrival order, and how many of each kind."""
    rows = corpus if corpus is not None else corpus_records()
    rnd = random.Random(seed)
    n_orig = min(len(rows), n, max(1, round(n * ORIGINAL_SHARE)))
    originals = rows[:n_orig]
    keyed: list[tuple[float, dict[str, Any]]] = [(float(i), r) for i, r in enumerate(originals)]
    kinds: Counter[str] = Counter(original=n_orig)
    names = [name for name, _ in VARIANTS]
    weights = [weight for _, weight in VARIANTS]
    for serial in range(n - n_orig):
        i = rnd.randrange(n_orig)
        kind = rnd.choices(names, weights)[0]
        keyed.append((i + rnd.uniform(0.5, VARIANT_SPREAD), _variant(originals[i], kind, serial, rnd)))
        kinds[kind] += 1
    keyed.sort(key=lambda pair: pair[0])
    return [orjson.dumps(r) for _, r in keyed], kinds


def parse(lines: Iterable[bytes], settings: Any) -> Iterator[Delivery | Rejection]:
    """The producer's parsing step, as ``akhbar replay`` runs it on a JSONL file."""
    for line in lines:
        yield parse_json_record(
            line,
            default_source="bench",
            max_bytes=settings.max_delivery_bytes,
            max_depth=settings.max_json_depth,
        )


def warmup_records(n: int, tag: str) -> list[bytes]:
    """Synthetic stories, unlike any corpus article, that get every worker process warm."""
    rnd = random.Random(tag)
    words = [
        "تجربة",
        "تسخين",
        "عامل",
        "خط",
        "المعالجة",
        "قبل",
        "القياس",
        "رقم",
        "نص",
        "عشوائي",
        "لا",
        "يشبه",
        "أي",
        "خبر",
        "حقيقي",
    ]
    return [
        orjson.dumps(
            {
                "id": f"warmup-{tag}-{i}",
                "source": "warmup",
                "title": " ".join(rnd.choices(words, k=6)),
                "body": "\n".join(" ".join(rnd.choices(words, k=40)) + f" {tag} {i} {j}" for j in range(4)),
            }
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------------
# servers: a fresh database and a private Redis prefix per scenario


def _token() -> str:
    return f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


@contextmanager
def fresh_database(
    tag: str, admin_url: str = PG_ADMIN_URL, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """A new PostgreSQL database for one scenario (dropped afterwards); yields its SQLAlchemy URL.

    ``settings`` become the database's defaults (``ALTER DATABASE ... SET``), as an operator would
    set them, e.g. ``default_toast_compression=lz4``.
    """
    name = f"akhbar_bench_{tag}_{_token()}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        for key, value in (settings or {}).items():
            conn.execute(f'ALTER DATABASE "{name}" SET {key} = {value}')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        from models.session import get_engine

        get_engine(f"{base}/{name}").dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_prefix(client: redis.Redis, tag: str) -> Iterator[str]:
    """A Redis key prefix for one scenario; every key under it is deleted afterwards."""
    prefix = f"akhbar-bench-{tag}-{_token()}"
    try:
        yield prefix
    finally:
        delete_prefix(client, prefix)
        # The running-mark files its killed worker processes left (worker/marks.py).
        from worker import marks

        marks.forget(prefix, marks.directory(REDIS_URL))


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    deleted = 0
    for key in client.scan_iter(match=f"{prefix}*", count=2000):
        deleted += client.delete(key)
    return deleted


def prefix_bytes(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """Keys under ``prefix`` and the bytes Redis reports for them (MEMORY USAGE)."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=2000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return len(keys), sum(int(n or 0) for n in pipe.execute())


# ------------------------------------------------------------------------------------------------
# worker processes


class Workers:
    """One worker node with ``concurrency`` prefork processes, started as a deployment starts it."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._fh = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.rss_samples: list[tuple[float, list[float]]] = []
        self.uss_last: list[float] = []

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.tail()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu_split(self) -> tuple[float, float]:
        """CPU time (user + system) used so far by the worker node's own process (Celery's consumer:
        it takes the messages from Redis and hands them to the pool) and by its pool processes
        together."""
        try:
            node = psutil.Process(self.proc.pid)
            children = node.children(recursive=True)
        except psutil.NoSuchProcess:
            return (0.0, 0.0)
        split = [0.0, 0.0]
        for i, proc in [(0, node), *((1, child) for child in children)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            split[i] += times.user + times.system
        return (split[0], split[1])

    def cpu_since(self, start: tuple[float, float]) -> tuple[float, float]:
        """CPU time since ``start`` (a :meth:`cpu_split`): the node's own process, and the node with
        its pool processes."""
        node, pool = self.cpu_split()
        return node - start[0], node + pool - start[0] - start[1]

    def _per_child(self, measure: Callable[[psutil.Process], float]) -> list[float]:
        """``measure`` of each pool process (the children that run tasks); gone ones are skipped."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for child in children:
            try:
                out.append(measure(child))
            except psutil.NoSuchProcess:
                continue
        return out

    def pool_rss_mb(self) -> list[float]:
        """Resident memory of each pool process, in MB."""
        return self._per_child(lambda p: p.memory_info().rss / 2**20)

    def pool_uss_mb(self) -> list[float]:
        """Memory unique to each pool process (USS, MB): what it does not share with its parent by
        copy-on-write after the fork, i.e. what each extra process really costs."""
        return self._per_child(lambda p: p.memory_full_info().uss / 2**20)

    def sample(self, done: int) -> None:
        self.rss_samples.append((done, self.pool_rss_mb()))
        self.uss_last = self.pool_uss_mb()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._fh.close()


def server_cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) used so far by this machine's PostgreSQL servers and Redis servers.

    For PostgreSQL: each postmaster's own time, what its exited children (backends of closed
    connections) used, and its live children. Readable for servers run by this user or as root;
    others count as 0. The servers are shared with whatever else the machine runs, so the figure is
    exact only when nothing else uses them during the run.
    """
    pg = rd = 0.0
    for proc in psutil.process_iter(["name", "ppid"]):
        try:
            name = proc.info["name"] or ""
            if name == "postgres" and psutil.Process(proc.info["ppid"]).name() != "postgres":
                t = proc.cpu_times()
                pg += t.user + t.system + t.children_user + t.children_system
                for child in proc.children():
                    c = child.cpu_times()
                    pg += c.user + c.system
            elif name.startswith("redis-server"):
                t = proc.cpu_times()
                rd += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {"postgresql": pg, "redis": rd}


def _server_ms_per_story(before: dict[str, float], n: int) -> dict[str, float]:
    after = server_cpu_seconds()
    return {k: round(1000 * (after[k] - before[k]) / max(n, 1), 3) for k in before}


def worker_env(database_url: str, prefix: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env.update(
        {
            "AKHBAR_DATABASE_URL": database_url,
            "AKHBAR_REDIS_URL": redis_url,
            "AKHBAR_REDIS_PREFIX": prefix,
            "AKHBAR_LOG_FORMAT": "json",
            "AKHBAR_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        },
        **extra,
    )
    return env


# ------------------------------------------------------------------------------------------------
# measuring a run


@dataclass
class RunResult:
    """One scenario's figures."""

    name: str
    workers: int
    published: int
    committed: int
    seconds: float
    stories_per_second: float
    outcomes: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    stage_median_ms: dict[str, float] = field(default_factory=dict)
    stage_mean_ms: dict[str, float] = field(default_factory=dict)
    log_lines_per_story: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    redis: dict[str, float] = field(default_factory=dict)
    rate: float | None = None
    # 1-minute load average of the machine when the run ended (others' work shows up here)
    load_avg: float = 0.0
    # CPU time per committed delivery: the worker node with its pool processes, and the producer
    # (parsing, wrapping, the publish ledger, serializing and sending)
    worker_cpu_ms_per_story: float = 0.0
    # of which the worker node's own process (Celery's consumer), the rest being the pool's
    worker_node_cpu_ms_per_story: float = 0.0
    producer_cpu_ms_per_story: float = 0.0
    # and the database and broker servers' CPU time per committed delivery (see server_cpu_seconds)
    server_cpu_ms_per_story: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__ | {"cpu_ms_per_story": self.cpu_ms_per_story()}

    def cpu_ms_per_story(self) -> float:
        """The machine's CPU a story: worker processes, producer, PostgreSQL and Redis servers."""
        return round(self.worker_cpu_ms_per_story + self.producer_cpu_ms_per_story
                     + sum(self.server_cpu_ms_per_story.values()), 3)


def percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    ordered = sorted(values_ms)

    def pct(p: float) -> float:
        # nearest-rank percentile
        return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))], 1)

    return {
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def stage_costs(log_path: Path) -> tuple[dict[str, float], dict[str, float], int, int]:
    """Median and mean ``duration_ms`` per stage from a worker log, the number of stories seen,
    and the number of log lines written."""
    per_stage: dict[str, list[float]] = defaultdict(list)
    lines = stories = 0
    with log_path.open("rb") as fh:
        for line in fh:
            lines += 1
            if b"stage_completed" not in line and b"naive_timings" not in line:
                continue
            if b"naive_timings" in line:
                timings = orjson.loads(line[line.index(b"{") :])
                stories += 1
                for stage, ms in timings.items():
                    per_stage[stage].append(ms)
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if event.get("event") != "stage_completed":
                continue
            per_stage[event["stage"]].append(float(event.get("duration_ms", 0.0)))
            if event["stage"] == "persist":
                stories += 1
    medians = {s: round(statistics.median(v), 3) for s, v in per_stage.items()}
    means = {s: round(statistics.fmean(v), 3) for s, v in per_stage.items()}
    return medians, means, stories, lines


class Progress:
    """Polls the committed count until it reaches ``total``, sampling worker memory as it goes."""

    def __init__(
        self, count: Any, workers: Workers, total: int, label: str, stall_seconds: float = 120
    ) -> None:
        self.count, self.workers, self.total, self.label = count, workers, total, label
        self.stall_seconds = stall_seconds

    def wait(self) -> int:
        last, last_change, last_print, last_rss = -1, time.monotonic(), 0.0, 0.0
        while True:
            done = self.count()
            now = time.monotonic()
            if now - last_rss >= 1.0:
                self.workers.sample(done)
                last_rss = now
            if done != last:
                last, last_change = done, now
            if now - last_print >= 5:
                progress(f"{self.label}: {done}/{self.total} committed")
                last_print = now
            if done >= self.total:
                self.workers.sample(done)
                return done
            if self.workers.proc.poll() is not None:
                raise RuntimeError(f"worker died: {self.workers.tail()}")
            if now - last_change > self.stall_seconds:
                raise RuntimeError(
                    f"{self.label}: no progress for {self.stall_seconds} s at {done}/{self.total}: "
                    f"{self.workers.tail()}"
                )
            time.sleep(0.25)


def rss_summary(samples: list[tuple[float, list[float]]]) -> dict[str, float]:
    """Pool-process RSS: after warm-up (first sample past 10% of the run), at the end, and the peak."""
    samples = [(d, r) for d, r in samples if r]
    if not samples:
        return {}
    total = samples[-1][0] or 1
    warm = next((r for d, r in samples if d >= 0.1 * total), samples[0][1])
    return {
        "after_warmup_max": round(max(warm), 1),
        "end_max": round(max(samples[-1][1]), 1),
        "peak": round(max(max(r) for _, r in samples), 1),
        "processes": len(samples[-1][1]),
    }


# ------------------------------------------------------------------------------------------------
# akhbar scenarios


def _akhbar_settings(database_url: str, prefix: str, redis_url: str) -> Any:
    from pydantic import SecretStr

    from akhbar.settings import Settings

    return Settings(database_url=database_url, redis_url=SecretStr(redis_url), redis_prefix=prefix)


def run_akhbar(
    lines: list[bytes],
    *,
    workers: int,
    redis_url: str,
    admin_url: str,
    logs: Path,
    rate: float | None = None,
    label: str = "akhbar",
    pg_settings: dict[str, str] | None = None,
) -> RunResult:
    """One scenario: fresh database and prefix, ``akhbar worker -c workers``, publish, wait, measure."""
    from sqlalchemy import func, select

    from models import Delivery as DeliveryRow
    from models.session import session_factory, upgrade
    from producers.publish import Publisher

    client = redis.Redis.from_url(redis_url)
    with fresh_database("e2e", admin_url, pg_settings) as url, private_prefix(client, "e2e") as prefix:
        upgrade(url)
        settings = _akhbar_settings(url, prefix, redis_url)
        log_path = logs / f"{label}-w{workers}.log"
        pool = Workers(
            [
                "-m",
                "akhbar.cli",
                "worker",
                f"--concurrency={workers}",
                "--loglevel=INFO",
                f"--hostname={label}-{prefix}@%h",
            ],
            worker_env(url, prefix, redis_url),
            log_path,
        )
        publisher = Publisher(settings)
        sessions = session_factory(url)
        try:
            pool.wait_ready()

            def committed(run_id: str) -> Any:
                def count() -> int:
                    with sessions() as s:
                        return int(
                            s.scalar(
                                select(func.count())
                                .select_from(DeliveryRow)
                                .where(DeliveryRow.run_id == run_id)
                            )
                            or 0
                        )

                return count

            warm = f"warmup-{uuid.uuid4().hex[:6]}"
            n_warm = publisher.publish(
                parse(warmup_records(20 * workers, warm), settings), run_id=warm, live=rate is not None
            )
            Progress(committed(warm), pool, len(n_warm), "warm-up").wait()
            offset = log_path.stat().st_size
            pool.rss_samples.clear()
            cpu_start = pool.cpu_split()
            producer_cpu = time.process_time()
            servers = server_cpu_seconds()

            run_id = uuid.uuid4().hex
            progress(
                f"{label}: publishing {len(lines)} deliveries to {workers} worker process(es)"
                + (f" at {rate:.0f}/s" if rate else " as fast as the producer can")
            )
            started = time.time()
            if rate is None:
                ids = publisher.publish(parse(lines, settings), run_id=run_id)
            else:
                ids = paced_publish(publisher, list(parse(lines, settings)), rate, run_id, settings)
            published_s = time.time() - started
            producer_cpu = time.process_time() - producer_cpu
            progress(f"{label}: published in {published_s:.1f} s; waiting for the workers")
            Progress(committed(run_id), pool, len(ids), label).wait()
            node_cpu, worker_cpu = pool.cpu_since(cpu_start)
            server_cpu = _server_ms_per_story(servers, len(ids))
            with sessions() as s:
                rows = s.execute(
                    select(DeliveryRow.received_at, DeliveryRow.processed_at, DeliveryRow.status).where(
                        DeliveryRow.run_id == run_id
                    )
                ).all()
            last = max(r.processed_at for r in rows).timestamp()
            seconds = last - started
            latencies = [(r.processed_at - r.received_at).total_seconds() * 1000 for r in rows]
            keys, index_bytes = prefix_bytes(client, prefix)
        finally:
            pool.stop()
            publisher.close()
        medians, means, _stories, log_lines = _stage_costs_from(log_path, offset)
        result = RunResult(
            name=label,
            workers=workers,
            published=len(ids),
            committed=len(rows),
            seconds=round(seconds, 2),
            stories_per_second=round(len(rows) / seconds, 1),
            outcomes=dict(Counter(r.status for r in rows)),
            latency_ms=percentiles(latencies),
            stage_median_ms=medians,
            stage_mean_ms=means,
            log_lines_per_story=round(log_lines / max(len(rows), 1), 2),
            rss_mb=rss_summary(pool.rss_samples) | {"end_uss_max": round(max(pool.uss_last, default=0.0), 1)},
            redis={
                "keys_after_run": keys,
                "bytes_after_run": index_bytes,
                "bytes_per_story": round(index_bytes / max(len(rows), 1), 1),
            },
            rate=rate,
            load_avg=round(os.getloadavg()[0], 2),
            worker_cpu_ms_per_story=round(1000 * worker_cpu / max(len(rows), 1), 3),
            worker_node_cpu_ms_per_story=round(1000 * node_cpu / max(len(rows), 1), 3),
            producer_cpu_ms_per_story=round(1000 * producer_cpu / max(len(rows), 1), 3),
            server_cpu_ms_per_story=server_cpu,
        )
        progress(
            f"{label}: {result.stories_per_second} stories/s, p99 {result.latency_ms.get('p99')} ms, "
            f"RSS {result.rss_mb}"
        )
        return result


def _stage_costs_from(log_path: Path, offset: int) -> tuple[dict[str, float], dict[str, float], int, int]:
    """Stage costs from the part of the log written after ``offset`` (the measured run only)."""
    part = log_path.with_suffix(".run.log")
    with log_path.open("rb") as src, part.open("wb") as dst:
        src.seek(offset)
        dst.write(src.read())
    return stage_costs(part)


def paced_publish(
    publisher: Any, items: list[Delivery | Rejection], rate: float, run_id: str, settings: Any
) -> list[str]:
    """Publish on the live queue at ``rate`` deliveries/s, flushing a micro-batch at ``batch_size``
    deliveries or when its oldest delivery has waited ``batch_ms``, as a live source does."""
    ids: list[str] = []
    pending: list[Any] = []
    oldest = 0.0
    start = time.perf_counter()
    max_wait = settings.batch_ms / 1000
    for i, item in enumerate(items):
        due = start + i / rate
        while True:
            now = time.perf_counter()
            if pending and (now - oldest >= max_wait):
                publisher.send(pending, live=True)
                ids.extend(m.delivery_id for m in pending)
                pending = []
            if now >= due:
                break
            time.sleep(min(due - now, max_wait))
        if not pending:
            oldest = time.perf_counter()
        pending.append(publisher.wrap(item, run_id=run_id, correlation_id=run_id))
        if len(pending) >= settings.batch_size:
            publisher.send(pending, live=True)
            ids.extend(m.delivery_id for m in pending)
            pending = []
    if pending:
        publisher.send(pending, live=True)
        ids.extend(m.delivery_id for m in pending)
    return ids


# ------------------------------------------------------------------------------------------------
# naive scenario


def naive_rate(before: RunResult | None, after: RunResult | None) -> float | None:
    """The baseline's stories/s over its runs together: all their stories over all their time."""
    runs = [r for r in (before, after) if r is not None]
    if not runs:
        return None
    return round(sum(r.committed for r in runs) / sum(r.seconds for r in runs), 1)


def naive_cpu(before: RunResult | None, after: RunResult | None) -> float | None:
    """The baseline's machine CPU a story over its runs together (weighted by their stories)."""
    runs = [r for r in (before, after) if r is not None]
    if not runs:
        return None
    return round(sum(r.cpu_ms_per_story() * r.committed for r in runs) / sum(r.committed for r in runs), 3)


def run_naive(
    lines: list[bytes], *, redis_url: str, admin_url: str, logs: Path, workers: int = 2, label: str = "naive"
) -> RunResult:
    """The naive baseline on ``lines`` (rejections are left out: it only handles valid records)."""
    from celery import Celery
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from akhbar.settings import Settings
    from bench.naive.app import QUEUE
    from bench.naive.models import NaiveBase, NaiveDelivery
    from models.session import normalize_url
    from worker.messages import new_delivery_id

    client = redis.Redis.from_url(redis_url)
    settings = Settings()
    records = [item for item in parse(lines, settings) if isinstance(item, Delivery)]
    with fresh_database("naive", admin_url) as url, private_prefix(client, "naive") as prefix:
        engine = create_engine(normalize_url(url))
        NaiveBase.metadata.create_all(engine)
        log_path = logs / f"{label}.log"
        pool = Workers(
            [
                "-m",
                "celery",
                "-A",
                "bench.naive.app",
                "worker",
                f"--concurrency={workers}",
                "--pool=prefork",
                f"--queues={QUEUE}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                f"--hostname=naive-{prefix}@%h",
            ],
            worker_env(url, prefix, redis_url),
            log_path,
        )
        producer = Celery("naive-producer", broker=redis_url, set_as_current=False)
        producer.conf.broker_transport_options = {"global_keyprefix": f"{prefix}:"}

        def send(item: Delivery, delivery_id: str) -> None:
            producer.send_task(
                "naive.ingest",
                queue=QUEUE,
                kwargs={
                    "delivery_id": delivery_id,
                    "received_at": datetime.now(UTC).isoformat(),
                    "source": item.source,
                    "source_id": item.id,
                    "title": item.title,
                    "body": item.body,
                    "format": item.format,
                },
            )

        def count() -> int:
            with Session(engine) as s:
                return int(s.scalar(select(func.count()).select_from(NaiveDelivery)) or 0)

        try:
            pool.wait_ready()
            warm = [
                i for i in parse(warmup_records(10 * workers, "naive"), settings) if isinstance(i, Delivery)
            ]
            for item in warm:
                send(item, new_delivery_id())
            Progress(count, pool, len(warm), "naive warm-up").wait()
            offset = log_path.stat().st_size
            pool.rss_samples.clear()
            cpu_start = pool.cpu_split()
            producer_cpu = time.process_time()
            servers = server_cpu_seconds()
            progress(f"{label}: publishing {len(records)} deliveries, one message each,"
                     f" to {workers} processes")
            started = time.time()
            for item in records:
                send(item, new_delivery_id())
            producer_cpu = time.process_time() - producer_cpu
            Progress(lambda: count() - len(warm), pool, len(records), label).wait()
            node_cpu, worker_cpu = pool.cpu_since(cpu_start)
            server_cpu = _server_ms_per_story(servers, len(records))
            with Session(engine) as s:
                rows = s.execute(
                    select(NaiveDelivery.received_at, NaiveDelivery.processed_at, NaiveDelivery.status).where(
                        ~NaiveDelivery.source.in_(["warmup"])
                    )
                ).all()
            last = max(r.processed_at for r in rows).timestamp()
            seconds = last - started
        finally:
            pool.stop()
            engine.dispose()
        medians, means, _stories, log_lines = _stage_costs_from(log_path, offset)
        result = RunResult(
            name="naive",
            workers=workers,
            published=len(records),
            committed=len(rows),
            seconds=round(seconds, 2),
            stories_per_second=round(len(rows) / seconds, 1),
            outcomes=dict(Counter(r.status for r in rows)),
            latency_ms=percentiles([(r.processed_at - r.received_at).total_seconds() * 1000 for r in rows]),
            stage_median_ms=medians,
            stage_mean_ms=means,
            log_lines_per_story=round(log_lines / max(len(rows), 1), 2),
            rss_mb=rss_summary(pool.rss_samples),
            load_avg=round(os.getloadavg()[0], 2),
            worker_cpu_ms_per_story=round(1000 * worker_cpu / max(len(rows), 1), 3),
            worker_node_cpu_ms_per_story=round(1000 * node_cpu / max(len(rows), 1), 3),
            producer_cpu_ms_per_story=round(1000 * producer_cpu / max(len(rows), 1), 3),
            server_cpu_ms_per_story=server_cpu,
        )
        progress(f"{label}: {result.stories_per_second} stories/s over {len(rows)} deliveries")
        return result


# ------------------------------------------------------------------------------------------------
# message size and embedded mode


def message_bytes(lines: list[bytes], redis_url: str) -> dict[str, float]:
    """Bytes per story the queue holds: Celery's default JSON (one message per story) against
    akhbar's micro-batches (UTF-8 JSON + zstd), for the same deliveries, nothing consuming."""
    from celery import Celery

    from akhbar.settings import Settings
    from producers.publish import Publisher

    client = redis.Redis.from_url(redis_url)
    items = [i for i in parse(lines, Settings()) if isinstance(i, Delivery)]
    text = sum(len(i.body.encode()) + len((i.title or "").encode()) for i in items)
    with private_prefix(client, "msg") as prefix:
        naive = Celery("naive-size", broker=redis_url, set_as_current=False)
        naive.conf.broker_transport_options = {"global_keyprefix": f"{prefix}-naive:"}
        for item in items:
            naive.send_task("naive.ingest", kwargs=item.model_dump(mode="json"), queue="naive")
        naive_bytes = sum(len(m) for m in client.lrange(f"{prefix}-naive:naive", 0, -1))
        # Nothing consumes these: no database, so no publish ledger either.
        settings = _akhbar_settings("sqlite://", f"{prefix}-akhbar", redis_url).model_copy(
            update={"publish_ledger": False}
        )
        publisher = Publisher(settings)
        publisher.publish(items)
        ours = sum(len(m) for m in client.lrange(f"{prefix}-akhbar:{settings.queue_bulk}", 0, -1))
        publisher.close()
    n = max(len(items), 1)
    return {
        "stories": len(items),
        "text_bytes_per_story": round(text / n),
        "naive_bytes_per_story": round(naive_bytes / n),
        "akhbar_bytes_per_story": round(ours / n),
        "ratio": round(naive_bytes / max(ours, 1), 2),
    }


def run_embedded(records: list[dict[str, Any]], logs: Path) -> dict[str, Any]:
    """``akhbar replay`` of ``records`` on a fresh SQLite file, no servers: its own summary."""
    with tempfile.TemporaryDirectory(prefix="akhbar-bench-embedded-") as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
        env.update(
            {
                "AKHBAR_DATABASE_URL": f"sqlite:///{tmp}/akhbar.db",
                "AKHBAR_LOG_FORMAT": "json",
                "AKHBAR_LOG_LEVEL": "INFO",
            }
        )
        progress(f"embedded: akhbar replay of {len(records)} records on SQLite")
        with (logs / "embedded.log").open("wb") as err:
            done = subprocess.run(
                [sys.executable, "-m", "akhbar.cli", "replay", str(path), "--json"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                check=False,
                timeout=3600,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"akhbar replay failed ({done.returncode}): "
                f"{(logs / 'embedded.log').read_text(errors='replace')[-2000:]}"
            )
        summary: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
        progress(f"embedded: {summary['stories_per_second']} stories/s")
        return summary


# ------------------------------------------------------------------------------------------------
# the whole benchmark


@dataclass
class Options:
    deliveries: int = 20_000
    workers: int = 2
    naive_deliveries: int = 3_000
    # The baseline runs once before and once after akhbar's main run, and the ratio is taken
    # against both together: the machine's speed drifts during a run, and a baseline measured on
    # one side of it only carries that drift into the ratio.
    naive_after: bool = True
    rate: float | None = None  # None: 1,500/s, or half the measured throughput if that is lower
    scaling: bool = True
    latency: bool = True
    embedded: bool = True
    embedded_records: int | None = None  # None: the whole corpus
    message_sample: int = 1_000
    seed: int = 7
    # PostgreSQL settings for akhbar's databases (ALTER DATABASE ... SET), e.g. default_toast_compression=lz4
    pg_settings: dict[str, str] = field(default_factory=dict)
    redis_url: str = REDIS_URL
    admin_url: str = PG_ADMIN_URL
    logs: Path | None = None


TARGET_RATE = 1_500.0


def run(opts: Options) -> dict[str, Any]:
    """Every scenario; returns the figures as one JSON-ready mapping."""
    from akhbar.logging import configure_logging

    # The harness's own publisher logs are not part of the measurement.
    configure_logging("WARNING", "json")
    logs = opts.logs or Path(tempfile.mkdtemp(prefix="akhbar-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    progress(f"building {opts.deliveries} deliveries from the corpus (logs in {logs})")
    corpus = corpus_records()
    lines, kinds = build_records(opts.deliveries, opts.seed, corpus)
    out: dict[str, Any] = {
        "deliveries": len(lines),
        "delivery_kinds": dict(kinds),
        "workers": opts.workers,
        "machine": {"cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
    }
    out["message_bytes"] = message_bytes(lines[: opts.message_sample], opts.redis_url)
    progress(f"queue bytes per story: {out['message_bytes']}")

    naive = None
    if opts.naive_deliveries:
        naive = run_naive(
            lines[: opts.naive_deliveries], redis_url=opts.redis_url, admin_url=opts.admin_url, logs=logs
        )
    main = run_akhbar(
        lines,
        workers=opts.workers,
        redis_url=opts.redis_url,
        admin_url=opts.admin_url,
        logs=logs,
        label="throughput",
        pg_settings=opts.pg_settings,
    )
    naive_after = None
    if naive is not None and opts.naive_after:
        naive_after = run_naive(
            lines[: opts.naive_deliveries], redis_url=opts.redis_url, admin_url=opts.admin_url, logs=logs,
            label="naive-after",
        )
    baseline = naive_rate(naive, naive_after)
    scaling = None
    if opts.scaling and opts.workers != 1:
        scaling = run_akhbar(
            lines,
            workers=1,
            redis_url=opts.redis_url,
            admin_url=opts.admin_url,
            logs=logs,
            label="scaling",
            pg_settings=opts.pg_settings,
        )
    paced = None
    if opts.latency:
        # Half the measured rate: on a machine shared with other jobs a rate near the measured one
        # builds a backlog as soon as their load rises, and the percentiles then measure the backlog.
        rate = opts.rate or min(TARGET_RATE, round(0.5 * main.stories_per_second))
        paced = run_akhbar(
            lines,
            workers=opts.workers,
            redis_url=opts.redis_url,
            admin_url=opts.admin_url,
            logs=logs,
            rate=rate,
            pg_settings=opts.pg_settings,
            label="latency",
        )
    embedded = None
    if opts.embedded:
        records = corpus if opts.embedded_records is None else corpus[: opts.embedded_records]
        embedded = run_embedded(records, logs)

    latency = paced.latency_ms if paced else main.latency_ms
    naive_cpu_ms, main_cpu_ms = naive_cpu(naive, naive_after), main.cpu_ms_per_story()
    out.update(
        {
            "stories_per_second": main.stories_per_second,
            "ratio_vs_naive": round(main.stories_per_second / baseline, 2) if baseline else None,
            "naive_stories_per_second": baseline,
            # What the ratio of stories/s comes to on a busy core, less sensitive to the machine's
            # drift between the runs: the baseline's CPU a story over akhbar's, all processes counted.
            "cpu_ms_per_story": main_cpu_ms,
            "naive_cpu_ms_per_story": naive_cpu_ms,
            "cpu_ratio_vs_naive": round(naive_cpu_ms / main_cpu_ms, 2)
            if naive_cpu_ms and main_cpu_ms else None,
            "p50_ms": latency.get("p50"),
            "p95_ms": latency.get("p95"),
            "p99_ms": latency.get("p99"),
            "latency_rate": paced.rate if paced else None,
            "worker_rss_mb": main.rss_mb.get("end_max"),
            "stage_median_ms": main.stage_median_ms,
            "throughput": main.as_dict(),
            "naive": naive.as_dict() if naive else None,
            "naive_after": naive_after.as_dict() if naive_after else None,
            "scaling": {
                "one_worker": scaling.stories_per_second,
                "two_workers": main.stories_per_second,
                "speedup": round(main.stories_per_second / scaling.stories_per_second, 2),
                "run": scaling.as_dict(),
            }
            if scaling
            else None,
            "latency": paced.as_dict() if paced else None,
            "embedded": embedded,
            "logs": str(logs),
            "pg_settings": opts.pg_settings,
        }
    )
    out["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _naive_rates(result: dict[str, Any]) -> str:
    naive, after = result["naive"], result.get("naive_after")
    if not after:
        return f"{naive['stories_per_second']:,.0f} ({naive['published']} deliveries)"
    return (f"{result['naive_stories_per_second']:,.0f} ({naive['published']} deliveries before and after:"
            f" {naive['stories_per_second']:,.0f} / {after['stories_per_second']:,.0f})")


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    main, naive = result["throughput"], result["naive"]
    table = Table(
        title=f"akhbar end to end: {result['deliveries']} deliveries, {result['workers']} worker processes"
    )
    table.add_column("figure")
    table.add_column("akhbar", justify="right")
    table.add_column("naive baseline", justify="right")
    table.add_row(
        "stories/s end to end",
        f"{main['stories_per_second']:,.0f}",
        _naive_rates(result) if naive else "-",
    )
    table.add_row("ratio vs naive", f"{result['ratio_vs_naive']}x" if result["ratio_vs_naive"] else "-", "1x")
    if result["scaling"]:
        s = result["scaling"]
        table.add_row(
            "1 -> 2 worker processes",
            f"{s['one_worker']:,.0f} -> {s['two_workers']:,.0f} stories/s ({s['speedup']}x)",
            "",
        )
    lat = result["latency"]
    if lat:
        table.add_row(
            f"publish->commit at {lat['rate']:,.0f}/s (p50/p95/p99)",
            f"{result['p50_ms']:,.0f} / {result['p95_ms']:,.0f} / {result['p99_ms']:,.0f} ms",
            "",
        )
    table.add_row(
        "publish->commit, bulk replay (p50/p99)",
        f"{main['latency_ms'].get('p50', 0):,.0f} / {main['latency_ms'].get('p99', 0):,.0f} ms",
        f"{naive['latency_ms'].get('p50', 0):,.0f} / {naive['latency_ms'].get('p99', 0):,.0f} ms"
        if naive
        else "",
    )
    stages = sorted(
        set(main["stage_median_ms"]) | set((naive or {}).get("stage_median_ms", {})),
        key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER),
    )
    for stage in stages:
        ours = main["stage_median_ms"].get(stage)
        theirs = (naive or {}).get("stage_median_ms", {}).get(stage)
        table.add_row(
            f"  median {stage} (ms/story)",
            f"{ours:.3f}" if ours is not None else "-",
            f"{theirs:.3f}" if theirs is not None else "-",
        )
    table.add_row(
        "CPU ms per story: worker processes / producer",
        f"{main['worker_cpu_ms_per_story']:.2f} / {main['producer_cpu_ms_per_story']:.2f}",
        f"{naive['worker_cpu_ms_per_story']:.2f} / {naive['producer_cpu_ms_per_story']:.2f}" if naive else "",
    )
    table.add_row(
        "  of the workers': the node's consumer process",
        f"{main.get('worker_node_cpu_ms_per_story', 0.0):.2f}",
        f"{naive.get('worker_node_cpu_ms_per_story', 0.0):.2f}" if naive else "",
    )
    def servers(r: dict[str, Any]) -> str:
        cpu = r.get("server_cpu_ms_per_story") or {}
        return f"{cpu.get('postgresql', 0):.2f} / {cpu.get('redis', 0):.2f}"

    table.add_row(
        "CPU ms per story: PostgreSQL / Redis servers", servers(main), servers(naive) if naive else ""
    )
    table.add_row(
        "CPU ms per story, all processes (ratio)",
        f"{main['cpu_ms_per_story']:.2f}",
        f"{result['naive_cpu_ms_per_story']:.2f} ({result['cpu_ratio_vs_naive']}x)" if naive else "",
    )
    table.add_row(
        "log lines per story",
        f"{main['log_lines_per_story']}",
        f"{naive['log_lines_per_story']}" if naive else "",
    )
    rss = main["rss_mb"]
    table.add_row(
        "worker RSS per process (MB): warm / end / peak",
        f"{rss.get('after_warmup_max')} / {rss.get('end_max')} / {rss.get('peak')}",
        f"{naive['rss_mb'].get('end_max')}" if naive else "",
    )
    msg = result["message_bytes"]
    table.add_row(
        "queue bytes per story",
        f"{msg['akhbar_bytes_per_story']:,}",
        f"{msg['naive_bytes_per_story']:,} ({msg['ratio']}x)",
    )
    table.add_row("Redis near-dup index bytes per story", f"{main['redis']['bytes_per_story']:,.0f}", "")
    if result["embedded"]:
        e = result["embedded"]
        table.add_row(
            f"embedded (SQLite) akhbar replay, {e['received']} records",
            f"{e['stories_per_second']:,.0f}/s",
            "",
        )
    table.add_row(
        "outcomes",
        ", ".join(f"{k} {v}" for k, v in sorted(main["outcomes"].items())),
        ", ".join(f"{k} {v}" for k, v in sorted(naive["outcomes"].items())) if naive else "",
    )
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (akhbar worker --concurrency)"
    )
    parser.add_argument(
        "--naive-deliveries", type=int, default=3_000, help="deliveries for the naive baseline (0: skip)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="deliveries/s for the latency run (default 1,500, or half the measured rate if lower)",
    )
    parser.add_argument(
        "--no-naive-after", action="store_true",
        help="run the baseline before akhbar's main run only, not after it too",
    )
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-embedded", action="store_true")
    parser.add_argument(
        "--embedded-records", type=int, default=None, help="records for embedded mode (default: whole corpus)"
    )
    parser.add_argument("--logs", type=Path, default=None, help="directory for the worker logs")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="PostgreSQL setting for akhbar's databases (ALTER DATABASE ... SET), e.g. "
        "default_toast_compression=lz4",
    )
    args = parser.parse_args(argv)
    result = run(
        Options(
            deliveries=args.deliveries,
            workers=args.workers,
            naive_deliveries=args.naive_deliveries,
            naive_after=not args.no_naive_after,
            rate=args.rate,
            scaling=not args.no_scaling,
            latency=not args.no_latency,
            embedded=not args.no_embedded,
            embedded_records=args.embedded_records,
            logs=args.logs,
            pg_settings=dict(item.split("=", 1) for item in args.pg_setting),
        )
    )
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print_table(result)


if __name__ == "__main__":
    main()
