"""Re-enrichment throughput (``akhbar replay --from-db``) against ingesting the same stories.

    uv run python -m bench.reenrich [--stories 2000] [--workers 2] [--no-embedded] [--json]

What one invocation does, on a fresh PostgreSQL database and a private Redis key prefix (both
removed afterwards), with real worker processes started as a deployment starts them
(``akhbar worker --concurrency N``):

1. **ingest** (the baseline): ``akhbar replay`` of the first ``--stories`` corpus articles;
2. **re-enrichment**: every stored story marked as enriched by an older version (and its places
   emptied, so that the run has something to write), then ``akhbar replay --from-db``; the
   stories/s of both come from the command's own summary (selection or parsing, publishing and
   waiting for the last commit), so the ratio compares like with like;
3. **no-op pass**: ``akhbar replay --from-db --all`` once everything is current (all unchanged,
   nothing written): the cost of reading, enriching and comparing alone;
4. **in process**: :func:`worker.reenrich.reenrich_batch` called directly on the same database in
   batches of :data:`~worker.reenrich.BATCH_SIZE`, interleaved batch by batch with two baselines on
   the same stories: the enrichment computation alone (:func:`worker.reenrich.enrich_stored`, no
   database; the difference is what locking, comparing, writing and recording cost) and the ingest
   pipeline (``process_batch`` into a fresh database). With no queue and no other process in
   between, this is the steadiest ratio on a shared machine;
5. **embedded mode** (unless ``--no-embedded``): the same ingest and re-enrichment through the
   ``akhbar`` command on SQLite with no servers.

Progress goes to stderr; the table (or, with ``--json``, one JSON object) to stdout. Absolute
figures drift on a shared machine: the ratios, measured in the same invocation, are what holds.

Corpus: SaudiNewsNet (CC BY-NC-SA 4.0), SANAD (CC BY 4.0); see ../shared/corpus/SOURCES.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import select, update

from bench.e2e import (
    PG_ADMIN_URL,
    REDIS_URL,
    ROOT,
    Workers,
    fresh_database,
    parse,
    private_prefix,
    progress,
    worker_env,
)

CORPUS = ROOT.parent / "shared" / "corpus" / "articles.jsonl.gz"
OLD_VERSION = "2000.1"
NL = b"\n"


def corpus_lines(n: int) -> bytes:
    """The first ``n`` corpus articles as JSON lines of the input contract."""
    lines = []
    with gzip.open(CORPUS, "rb") as fh:
        for raw in fh:
            article = orjson.loads(raw)
            outlet = article["id"].split("/")[2] if article["source_dataset"] == "SaudiNewsNet" else "sanad"
            record = {"id": article["id"], "title": article["title"], "body": article["body"],
                      "source": outlet, "url": article["url"]}
            lines.append(orjson.dumps(record))
            if len(lines) >= n:
                break
    return b"\n".join(lines) + b"\n"


def akhbar(env: dict[str, str], *args: str, cwd: Path = ROOT) -> dict[str, Any]:
    """Run the ``akhbar`` command; its one-line JSON summary."""
    done = subprocess.run([sys.executable, "-m", "akhbar.cli", *args, "--json"], cwd=cwd, env=env,
                          capture_output=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"akhbar {' '.join(args)} failed ({done.returncode}): "
                           f"{done.stderr.decode()[-2000:]}")
    summary: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return summary


def age(url: str) -> int:
    """Mark every story as written by an older enrichment that found no places."""
    from models import Story
    from models.session import session_factory

    with session_factory(url, write=True).begin() as session:
        rows = session.execute(select(Story.id, Story.enrichment)).all()
        session.execute(update(Story), [
            {"id": r.id, "enrichment_version": OLD_VERSION,
             "enrichment": {**r.enrichment, "version": OLD_VERSION, "places": []}}
            for r in rows
        ])
    return len(rows)


def in_process(url: str, lines: bytes, admin_url: str) -> dict[str, Any]:
    """``reenrich_batch`` called directly, one committed transaction per batch, against two
    baselines on the same stories: the enrichment computation alone, and the ingest pipeline
    (``process_batch`` into a fresh database, batches of ``batch_size``). The three are interleaved
    batch by batch, so that all see the same load on a shared machine."""
    from akhbar.settings import Settings
    from models.reenrich import lock_stories
    from models.session import session_factory, upgrade
    from worker import reenrich
    from worker.messages import Delivery, DeliveryMessage, IngestBatch, ReenrichBatch, new_delivery_id
    from worker.pipeline import process_batch
    from worker.stages.enrich import warm

    warm()
    settings = Settings()
    records = [DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                               correlation_id="bench", run_id="bench-ingest", record=item)
               for item in parse(lines.splitlines(), settings) if isinstance(item, Delivery)]
    sessions = session_factory(url, write=True)
    with sessions() as session:
        ids = reenrich.select(session, everything=True)
        stories = {story.id: story for story in lock_stories(session, ids)}
    for story in list(stories.values())[:200]:  # fill the enrichment's caches first
        reenrich.enrich_stored(story)
    age(url)
    compute_s = total_s = ingest_s = 0.0
    ingested = 0
    batch_s: list[float] = []
    size = reenrich.BATCH_SIZE
    per_ingest = settings.batch_size
    with fresh_database("reenrich_ingest", admin_url) as ingest_url:
        upgrade(ingest_url)
        ingest_sessions = session_factory(ingest_url, write=True)
        for n, i in enumerate(range(0, len(ids), size)):
            chunk = ids[i:i + size]
            start = time.perf_counter()
            for story_id in chunk:
                reenrich.enrich_stored(stories[story_id])
            compute_s += time.perf_counter() - start
            start = time.perf_counter()
            with sessions.begin() as session:
                reenrich.reenrich_batch(session, ReenrichBatch(story_ids=chunk, run_id="bench"))
            batch_s.append(time.perf_counter() - start)
            total_s += batch_s[-1]
            part = records[n * size:(n + 1) * size]
            start = time.perf_counter()
            for j in range(0, len(part), per_ingest):
                with ingest_sessions.begin() as session:
                    process_batch(session, IngestBatch(deliveries=part[j:j + per_ingest]))
            ingest_s += time.perf_counter() - start
            ingested += len(part)
    return {
        "stories": len(ids),
        "stories_per_second": round(len(ids) / total_s, 1),
        "compute_only_stories_per_second": round(len(ids) / compute_s, 1),
        "ingest_stories_per_second": round(ingested / ingest_s, 1),
        "ratio_reenrich_to_ingest": round((len(ids) / total_s) / (ingested / ingest_s), 2),
        "ms_per_story": round(total_s / len(ids) * 1000, 3),
        "compute_ms_per_story": round(compute_s / len(ids) * 1000, 3),
        "ingest_ms_per_story": round(ingest_s / ingested * 1000, 3),
        "batch_median_ms": round(statistics.median(batch_s) * 1000, 1),
        "database_share": round(1 - compute_s / total_s, 3),
    }


def distributed(lines: bytes, *, workers: int, redis_url: str, admin_url: str, logs: Path) -> dict[str, Any]:
    from models.session import upgrade

    client = redis.Redis.from_url(redis_url)
    with fresh_database("reenrich", admin_url) as url, private_prefix(client, "reenrich") as prefix:
        upgrade(url)
        env = worker_env(url, prefix, redis_url)
        pool = Workers(["-m", "akhbar.cli", "worker", f"--concurrency={workers}", "--loglevel=WARNING",
                        f"--hostname=reenrich-{prefix}@%h"], env, logs / f"workers-{workers}.log")
        cli_env = {**env, "AKHBAR_LOG_LEVEL": "WARNING"}
        try:
            pool.wait_ready()
            with tempfile.TemporaryDirectory(prefix="akhbar-bench-reenrich-") as tmp:
                path = Path(tmp) / "corpus.jsonl"
                path.write_bytes(lines)
                progress(f"distributed: ingest of {lines.count(NL)} articles, {workers} worker process(es)")
                ingest = akhbar(cli_env, "replay", str(path))
            aged = age(url)
            progress(f"distributed: re-enrichment of {aged} stories")
            first = akhbar(cli_env, "replay", "--from-db")
            progress("distributed: --all once everything is current")
            noop = akhbar(cli_env, "replay", "--from-db", "--all")
        finally:
            pool.stop()
        progress("in process: reenrich_batch against the enrichment computation alone")
        direct = in_process(url, lines, admin_url)
    return {"ingest": ingest, "reenrich": first, "noop": noop, "in_process": direct}


def embedded(lines: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="akhbar-bench-reenrich-embedded-") as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(lines)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
        env.update({"AKHBAR_DATABASE_URL": f"sqlite:///{tmp}/akhbar.db", "AKHBAR_LOG_LEVEL": "WARNING"})
        progress("embedded: ingest on SQLite")
        ingest = akhbar(env, "replay", str(path))
        aged = age(env["AKHBAR_DATABASE_URL"])
        progress(f"embedded: re-enrichment of {aged} stories")
        first = akhbar(env, "replay", "--from-db")
    return {"ingest": ingest, "reenrich": first}


def run(stories: int, workers: int, with_embedded: bool, redis_url: str, admin_url: str) -> dict[str, Any]:
    from akhbar.logging import configure_logging

    configure_logging("WARNING", "json")
    logs = Path(tempfile.mkdtemp(prefix="akhbar-bench-reenrich-logs-"))
    lines = corpus_lines(stories)
    result: dict[str, Any] = {"articles": stories, "workers": workers, "logs": str(logs),
                              "load_average_at_start": round(os.getloadavg()[0], 2)}
    result["distributed"] = distributed(lines, workers=workers, redis_url=redis_url, admin_url=admin_url,
                                        logs=logs)
    d = result["distributed"]
    d["ratio_reenrich_to_ingest"] = _ratio(d)
    if with_embedded:
        e = result["embedded"] = embedded(lines)
        e["ratio_reenrich_to_ingest"] = _ratio(e)
    return result


def _ratio(figures: dict[str, Any]) -> float:
    return round(figures["reenrich"]["stories_per_second"] / figures["ingest"]["stories_per_second"], 2)


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"re-enrichment of {result['articles']} corpus articles' stories")
    for column in ("run", "stories", "seconds", "stories/s", "vs ingest"):
        table.add_column(column, justify="left" if column == "run" else "right")
    d = result["distributed"]
    w = result["workers"]

    def row(name: str, summary: dict[str, Any], count: str, ratio: str = "") -> None:
        table.add_row(name, str(summary[count]), str(summary["seconds"]), str(summary["stories_per_second"]),
                      ratio)

    row(f"ingest, Redis + PostgreSQL, {w} workers", d["ingest"], "new")
    row(f"re-enrich, Redis + PostgreSQL, {w} workers", d["reenrich"], "selected",
        f"{d['ratio_reenrich_to_ingest']}x")
    row(f"--all when current (no writes), {w} workers", d["noop"], "selected")
    p = d["in_process"]
    table.add_row("reenrich_batch in one process", str(p["stories"]), "", str(p["stories_per_second"]), "")
    table.add_row("  enrichment alone, same stories", str(p["stories"]), "",
                  str(p["compute_only_stories_per_second"]), "")
    table.add_row("  ingest pipeline, same stories", str(p["stories"]), "",
                  str(p["ingest_stories_per_second"]), "")
    table.add_row("  reenrich_batch against ingest", "", "", "", f"{p['ratio_reenrich_to_ingest']}x")
    if "embedded" in result:
        e = result["embedded"]
        row("ingest, embedded (SQLite)", e["ingest"], "new")
        row("re-enrich, embedded (SQLite)", e["reenrich"], "selected", f"{e['ratio_reenrich_to_ingest']}x")
    Console().print(table)
    print(f"in process: {p['ms_per_story']} ms a story, of which enrichment {p['compute_ms_per_story']} ms; "
          f"database share {p['database_share']:.0%}; median batch of 100: {p['batch_median_ms']} ms")
    print(f"changed in the re-enrichment run: {d['reenrich']['changed']}; "
          f"load average at start {result['load_average_at_start']} on {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=2000, help="corpus articles to store, then re-enrich")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded-mode (SQLite) run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    args = parser.parse_args(argv)
    result = run(args.stories, args.workers, not args.no_embedded, args.redis_url, args.pg_admin_url)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print_table(result)


if __name__ == "__main__":
    main()
