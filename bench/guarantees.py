"""What the delivery guarantees cost: the publish ledger on the producer side, execution records
and isolated reprocessing on the worker side.

    uv run python -m bench.guarantees [--articles 1000] [--rounds 3]

On a private PostgreSQL database (created, migrated and dropped) and a private Redis key prefix:

1. publish: the same deliveries published with the ledger (written and committed before each
   message) and without it, in interleaved rounds: deliveries per second and the ratio;
2. ingest: the same micro-batches through the ingest task's attempt runner (execution records
   written before and finished with the batch, batch mode), the same with the running-delivery
   mark before each delivery (what the workers do: a store into the process's mark file), through
   the pipeline alone (no records), and through the runner's isolated mode (one transaction per
   delivery, as after a crash): stories per second and the ratios to the pipeline alone. Tables
   are emptied between runs, so every run stores the same stories.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

import psycopg
import redis

from akhbar.settings import Settings
from bench.message_size import CORPUS

PG_ADMIN = os.environ.get("AKHBAR_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = "executions, published_deliveries, story_versions, fingerprints, source_keys, deliveries, stories"


def _items(n: int) -> list[Any]:
    import gzip
    import json

    from producers.records import build_delivery

    items = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            items.append(
                build_delivery(
                    {
                        "id": row["id"],
                        "title": row["title"],
                        "body": row["body"],
                        "source": "bench",
                        "url": row["url"],
                    },
                    default_source="bench",
                    raw=b"",
                )
            )
            if len(items) >= n:
                break
    return items


def _truncate(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def bench_publish(settings: Settings, items: list[Any], rounds: int) -> dict[str, list[float]]:
    from producers.publish import Publisher

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    rates: dict[str, list[float]] = {"with ledger": [], "without ledger": []}
    for _ in range(rounds):
        for name, ledger in (("with ledger", True), ("without ledger", False)):
            publisher = Publisher(settings.model_copy(update={"publish_ledger": ledger}))
            started = time.perf_counter()
            publisher.publish(items, run_id=uuid.uuid4().hex)
            rates[name].append(len(items) / (time.perf_counter() - started))
            for key in client.scan_iter(match=f"{settings.redis_prefix}:*"):
                client.delete(key)
    return rates


def bench_ingest(settings: Settings, items: list[Any], rounds: int) -> dict[str, list[float]]:
    from models.session import session_factory
    from producers.publish import Publisher
    from worker import pipeline
    from worker.messages import IngestBatch
    from worker.quarantine import Attempt, AttemptRunner, running_marks

    publisher = Publisher(settings)
    run_id = uuid.uuid4().hex
    messages = [publisher.wrap(item, run_id=run_id, correlation_id=run_id) for item in items]
    batches = [
        IngestBatch(deliveries=messages[i : i + settings.batch_size])
        for i in range(0, len(messages), settings.batch_size)
    ]
    sessions = session_factory(settings.database_url, write=True)

    marks = running_marks(settings)

    def runner(batch: IngestBatch, with_marks: bool = False) -> AttemptRunner:
        return AttemptRunner(
            sessions,
            Attempt(task_id=str(uuid.uuid4()), attempt=0, worker="bench@local", pid=os.getpid()),
            max_attempts=settings.max_attempts,
            delivery_time_limit=settings.delivery_time_limit,
            marks=marks if with_marks else None,
        )

    def pipeline_alone() -> None:
        for batch in batches:
            with sessions.begin() as session:
                pipeline.process_batch(session, batch)

    def runner_batch_mode() -> None:
        for batch in batches:
            r = runner(batch)
            r.begin(batch)
            r.run_batch()

    def runner_batch_mode_marked() -> None:
        for batch in batches:
            r = runner(batch, with_marks=True)
            r.begin(batch)
            r.run_batch()

    def runner_isolated() -> None:
        for batch in batches:
            r = runner(batch)
            plan = r.begin(batch)
            # As after a crash: the same deliveries one at a time, each with its own record.
            plan.isolated, plan.suspects, plan.exec_ids = True, list(plan.todo), {}
            r.run()

    variants = {
        "pipeline alone": pipeline_alone,
        "runner, batch mode": runner_batch_mode,
        "runner, batch, marks": runner_batch_mode_marked,
        "runner, isolated": runner_isolated,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    pipeline_alone()  # warm the enrichment tables and the connection pool
    _truncate(settings.database_url)
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            rates[name].append(len(items) / (time.perf_counter() - started))
            _truncate(settings.database_url)
    return rates


def _print(title: str, rates: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(rates[baseline])
    print(f"\n{title}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"  {name:<22} {median:9.1f} /s   x{median / base:5.2f} of {baseline}   "
            f"(rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default=os.environ.get("AKHBAR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    from akhbar.logging import configure_logging
    from models.session import upgrade

    configure_logging("WARNING", "json")

    name = f"akhbar_bench_guarantees_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    prefix = f"akhbar-bench-guarantees-{uuid.uuid4().hex[:8]}"
    try:
        upgrade(url)
        settings = Settings(database_url=url, redis_url=args.redis, redis_prefix=prefix)
        items = _items(args.articles)
        print(
            f"{len(items)} corpus articles, batches of {settings.batch_size}, {args.rounds} interleaved "
            f"rounds, load average {os.getloadavg()[0]:.2f}"
        )
        _print("publish (producer side)", bench_publish(settings, items, args.rounds), "without ledger")
        _print(
            "ingest (worker side, PostgreSQL)", bench_ingest(settings, items, args.rounds), "pipeline alone"
        )
    finally:
        from models.session import _engines

        for engine in _engines.values():
            engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


if __name__ == "__main__":
    main()
