"""Where a worker's time goes: the ``akhbar.ingest`` task body under pyinstrument, in this process.

    uv run python -m bench.profile [--deliveries 3000] [--cpu] [--html out.html] [--bare]

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
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

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


def main(argv: list[str] | None = None) -> None:
    from pyinstrument import Profiler

    from akhbar.logging import configure_logging
    from akhbar.settings import Settings
    from bench.e2e import REDIS_URL, build_records, fresh_database, parse, private_prefix, server_cpu_seconds
    from models.session import upgrade
    from producers.publish import Publisher
    from worker.messages import IngestBatch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--html", type=Path, default=None, help="also write pyinstrument's HTML report here")
    parser.add_argument("--cpu", action="store_true", help="sample CPU time of this process, not wall time")
    parser.add_argument("--log", type=Path, default=Path("/dev/null"), help="where the worker's log lines go")
    parser.add_argument("--bare", action="store_true", help="no profiler: the per-delivery cost only")
    args = parser.parse_args(argv)

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
                profiler = Profiler(interval=0.0005)
                if args.cpu:
                    from pyinstrument.stack_sampler import get_stack_sampler

                    get_stack_sampler().timer_func = time.process_time
                server_started = backend_cpu_seconds(url)
                redis_started = server_cpu_seconds()["redis"]
                started, cpu_started = time.perf_counter(), time.process_time()
                if not args.bare:
                    profiler.start()
                for payload in payloads[1:]:
                    task.apply(kwargs=payload, task_id=str(uuid.uuid4()))
                if not args.bare:
                    profiler.stop()
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
                server = backend_cpu_seconds(url)
                server_seconds = sum(v - server_started.get(pid, 0.0) for pid, v in server.items())
                redis_seconds = server_cpu_seconds()["redis"] - redis_started
            finally:
                sys.stderr = stderr
                configure_logging("WARNING", "json", force=True)
    n = len(messages) - len(payloads[0]["deliveries"])
    where = "without the profiler" if args.bare else "under the profiler"
    print(f"{n} deliveries in {seconds:.2f} s {where}: {1000 * seconds / n:.3f} ms per delivery "
          f"({n / seconds:,.0f} per second in one process); CPU {1000 * cpu_seconds / n:.3f} ms per delivery"
          + (f", PostgreSQL backends' CPU {1000 * server_seconds / n:.3f} ms per delivery" if server else "")
          + (f", Redis servers' CPU {1000 * redis_seconds / n:.3f} ms per delivery" if redis_seconds else ""))
    if args.bare:
        return
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html())


if __name__ == "__main__":
    main()
