"""Where a worker's time goes: the ``akhbar.ingest`` task body under pyinstrument, in this process.

    uv run python -m bench.profile [--deliveries 3000] [--cpu] [--html out.html] [--bare] [--stages]

Builds the same deliveries as ``bench.e2e``, serializes each micro-batch exactly as the publisher
does (the task receives the decoded message), and runs the registered task's body in this process
(``Task.apply``: no broker, so the profile holds the worker's own work, not Celery's transport)
against a fresh PostgreSQL database and a private Redis prefix, both removed afterwards. Prints
the profile's top frames and the per-story cost.

The profile is wall-clock time by default, waits on PostgreSQL and Redis included; ``--cpu``
samples this process's CPU time instead (``time.process_time``), which is what a worker process
costs the machine's cores, without the database server's share or other jobs' noise. The
database server's share is printed beside it: the CPU time of the PostgreSQL backends serving the
run's database (read from ``/proc``, so only for a server on this machine), and the Redis servers'
(every redis-server process of the machine: exact only when nothing else uses Redis meanwhile).

``--bare`` runs the same batches without the profiler and prints only the per-delivery cost: the
profiler's own overhead (it slows call-heavy code several times) then stays out of a comparison
of two versions of the code, run by turns.

``--stages`` (without the profiler) also times, after each batch, the computations every delivery
needs whatever the design: its match form, and for one that is not an exact duplicate of a delivery
before it, its enrichment and near-duplicate signature, the pure functions the pipeline calls, with
no database, Redis, Celery or log around them. Their CPU a delivery, and their share of the task's,
bound from below what a worker spends a story: run after the task, they find the token memo warm
with their batch's tokens, so the share printed is if anything too low.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from pydantic import SecretStr


def backend_cpu_seconds(url: str) -> dict[int, float]:
    """CPU seconds (user + system) so far of each PostgreSQL backend connected to ``url``'s
    database; empty when the server's processes are not readable here."""
    import os

    from sqlalchemy import text

    from models.session import get_engine

    with get_engine(url).connect() as conn:
        # This connection is one of the pool's, the task's own: it is counted too.
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                 )).scalars().all()
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


@dataclass
class Computations:
    """CPU seconds spent in the per-delivery computations alone (see ``--stages``)."""

    normalize: float = 0.0
    enrich: float = 0.0
    signature: float = 0.0
    wall: float = 0.0  # seconds of wall-clock time in :meth:`run`
    deliveries: int = 0
    seen: set[object] = field(default_factory=set)

    def run(self, records: list[Any]) -> None:
        """Time the computations of ``records`` (deliveries, in arrival order): every one is
        normalized; one whose (source, id) or content hash came before is an exact duplicate, as
        the pipeline decides, and is neither enriched nor signed."""
        from worker.enrichment import enrich
        from worker.neardup import signature
        from worker.stages.normalize import normalize

        clock = time.process_time
        wall_started = time.perf_counter()
        for record in records:
            started = clock()
            norm = normalize(title=record.title, body=record.body, format=record.format)
            normalized = clock()
            self.normalize += normalized - started
            self.deliveries += 1
            keys = ((record.source, record.id), norm.content_hash)
            if any(key in self.seen for key in keys):
                continue
            self.seen.update(keys)
            enrich(title=record.title, body=record.body, paragraphs=norm.paragraphs,
                   match_title=norm.match_title, match_body=norm.match_body,
                   published_at=record.published_at, language_hint=record.language)
            enriched = clock()
            signature(match_title=norm.match_title, match_body=norm.match_body,
                      published_at=record.published_at, source=record.source)
            self.enrich += enriched - normalized
            self.signature += clock() - enriched
        self.wall += time.perf_counter() - wall_started

    def total(self) -> float:
        return self.normalize + self.enrich + self.signature


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; returns its figures (milliseconds of CPU a delivery, and the share)."""
    from pyinstrument import Profiler

    from akhbar.logging import configure_logging
    from akhbar.settings import Settings
    from bench.e2e import REDIS_URL, build_records, fresh_database, parse, private_prefix, server_cpu_seconds
    from models.session import upgrade
    from producers.publish import Publisher
    from worker.messages import Delivery, IngestBatch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--html", type=Path, default=None, help="also write pyinstrument's HTML report here")
    parser.add_argument("--cpu", action="store_true", help="sample CPU time of this process, not wall time")
    parser.add_argument("--log", type=Path, default=Path("/dev/null"), help="where the worker's log lines go")
    parser.add_argument("--bare", action="store_true", help="no profiler: the per-delivery cost only")
    parser.add_argument("--stages", action="store_true",
                        help="no profiler; also time the per-delivery computations alone after each batch")
    args = parser.parse_args(argv)
    args.bare = args.bare or args.stages
    computations = Computations()

    lines, _ = build_records(args.deliveries)
    client = redis.Redis.from_url(REDIS_URL)
    with fresh_database("profile") as url, private_prefix(client, "profile") as prefix:
        upgrade(url)
        settings = Settings(database_url=url, redis_url=SecretStr(REDIS_URL), redis_prefix=prefix,
                            log_format="json")
        # The worker logs every stage line as it would in production, to a file (a worker's stderr).
        with args.log.open("w") as sink:
            import sys

            stderr, sys.stderr = sys.stderr, sink
            try:
                configure_logging("INFO", "json", force=True)
                publisher = Publisher(settings)
                task = publisher.app.tasks["akhbar.ingest"]
                items = list(parse(lines, settings))
                run_id = uuid.uuid4().hex
                messages = [publisher.wrap(i, run_id=run_id, correlation_id=run_id) for i in items]
                size = settings.batch_size
                # What the worker decodes: the JSON the publisher sends.
                payloads = [
                    orjson.loads(orjson.dumps(
                        IngestBatch(deliveries=messages[i : i + size]).model_dump(
                            mode="json", exclude_defaults=True) | {"v": 1}))
                    for i in range(0, len(messages), size)
                ]
                task.apply(kwargs=payloads[0])  # warm-up: gazetteer, connections
                if args.stages:  # the warm-up batch's keys, as the database holds them, untimed
                    first = len(payloads[0]["deliveries"])
                    computations.run([i for i in items[:first] if isinstance(i, Delivery)])
                    computations = Computations(seen=computations.seen)
                profiler = Profiler(interval=0.0005)
                if args.cpu:
                    from pyinstrument.stack_sampler import get_stack_sampler

                    get_stack_sampler().timer_func = time.process_time
                server_started = backend_cpu_seconds(url)
                redis_started = server_cpu_seconds()["redis"]
                started, cpu_started = time.perf_counter(), time.process_time()
                if not args.bare:
                    profiler.start()
                for k, payload in enumerate(payloads[1:], start=1):
                    task.apply(kwargs=payload, task_id=str(uuid.uuid4()))
                    if args.stages:
                        batch = items[k * size : (k + 1) * size]
                        computations.run([i for i in batch if isinstance(i, Delivery)])
                if not args.bare:
                    profiler.stop()
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started - computations.total()
                server = backend_cpu_seconds(url)
                server_seconds = sum(v - server_started.get(pid, 0.0) for pid, v in server.items())
                redis_seconds = server_cpu_seconds()["redis"] - redis_started
            finally:
                sys.stderr = stderr
                configure_logging("WARNING", "json", force=True)
    n = len(messages) - len(payloads[0]["deliveries"])
    where = "without the profiler" if args.bare else "under the profiler"
    if args.stages:
        seconds -= computations.wall  # wall time of the task's batches only
    figures = {"deliveries": n, "cpu_ms": 1000 * cpu_seconds / n, "postgresql_ms": 1000 * server_seconds / n,
               "redis_ms": 1000 * redis_seconds / n}
    print(f"{n} deliveries in {seconds:.2f} s {where}: {1000 * seconds / n:.3f} ms per delivery "
          f"({n / seconds:,.0f} per second in one process); CPU {figures['cpu_ms']:.3f} ms per delivery"
          + (f", PostgreSQL backends' CPU {figures['postgresql_ms']:.3f} ms per delivery" if server else "")
          + (f", Redis servers' CPU {figures['redis_ms']:.3f} ms per delivery" if redis_seconds else ""))
    if args.stages:
        c = computations  # per delivery of the batches, as the task's figure (a rejection computes nothing)
        figures |= {"normalize_ms": 1000 * c.normalize / n, "enrich_ms": 1000 * c.enrich / n,
                    "signature_ms": 1000 * c.signature / n, "computations_ms": 1000 * c.total() / n,
                    "computations_share": c.total() / cpu_seconds}
        print(f"the computations alone, after each batch: normalize {figures['normalize_ms']:.3f}, enrich "
              f"{figures['enrich_ms']:.3f}, signature {figures['signature_ms']:.3f} ms per delivery, "
              f"{figures['computations_ms']:.3f} in all: {100 * figures['computations_share']:.1f}% of the "
              f"task's CPU")
    if args.bare:
        return figures
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html())
    return figures


if __name__ == "__main__":
    main()
