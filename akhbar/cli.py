"""The ``akhbar`` command line."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from akhbar.logging import configure_logging, get_logger
from akhbar.settings import Settings, get_settings

app = typer.Typer(help="Streaming ingestion of Arabic news wire stories.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
stories_app = typer.Typer(help="Look at stored stories.", no_args_is_help=True)
sources_app = typer.Typer(help="Health of the configured sources.", invoke_without_command=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(stories_app, name="stories")
app.add_typer(db_app, name="db")
app.add_typer(sources_app, name="sources")

log = get_logger("akhbar.cli")

SUMMARY_KEYS = ("received", "new", "duplicate", "near_duplicate", "update", "rejected")


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _err(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)


def ensure_schema(settings: Settings, *, auto: bool) -> None:
    """Upgrade the embedded default database in place; refuse to run on an outdated server schema."""
    from models.session import current_revision, head_revision, upgrade

    head = head_revision(settings.database_url)
    current = current_revision(settings.database_url)
    if current == head:
        return
    if auto:
        upgrade(settings.database_url)
        return
    _err(f"the database is at revision {current or 'none'}, this akhbar needs {head}: "
         "run `akhbar db upgrade`")
    raise typer.Exit(2)


def _progress(total: int | None, description: str, enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


@app.command()
def replay(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Seed files, JSON/JSONL(.gz) files, directories, or - for stdin.")] = None,
    source: Annotated[str | None, typer.Option(help=(
        "Source name for records that do not name one; with --from-db, only this source's stories."))] = None,
    wait: Annotated[bool, typer.Option(
        help="Wait until every delivery is committed, then summarize.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    live: Annotated[bool, typer.Option(help="Publish on the live queue instead of the bulk one.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds (0: never).")] = 0.0,
    from_db: Annotated[bool, typer.Option("--from-db", help=(
        "Enrich stored stories again instead (those enriched by another version than this akhbar's), "
        "updating them in place; no delivery or story is created."))] = False,
    since: Annotated[str | None, typer.Option(help=(
        "With --from-db: only stories stored (created_at) since this ISO date or date-time (UTC unless "
        "it says otherwise), or this long ago: 90m, 12h, 7d, 2w."))] = None,
    everything: Annotated[bool, typer.Option("--all", help=(
        "With --from-db: every selected story, even those already enriched by this version."))] = False,
    field_map: Annotated[list[str] | None, typer.Option("--map", metavar="FIELD=KEY[:REGEX]", help=(
        "Take a contract field from another key of each record, through the regular expression's first "
        "group if given; repeatable. E.g. --map published_at=date --map 'source=id:^[^/]+/[^/]+/([^/]+)/'."
    ))] = None,
) -> None:
    """Publish deliveries to the queue and (by default) wait until all are processed.

    With --from-db, re-enrich stored stories through the queue and summarize what changed.
    """
    settings = _settings()
    if from_db:
        if paths or live or field_map:
            _err("--from-db takes no paths or --map and always uses the bulk queue")
            raise typer.Exit(2)
        _replay_from_db(settings, since=since, source=source, everything=everything, wait=wait,
                        as_json=as_json, timeout=timeout)
        return
    if since is not None or everything:
        _err("--since and --all apply to --from-db only")
        raise typer.Exit(2)
    from producers.fieldmap import FieldMap

    try:
        mapping = FieldMap.parse(field_map or ())
    except ValueError as exc:
        _err(f"--map {exc}")
        raise typer.Exit(2) from None
    if not paths:
        _err("give files or directories to replay (or --from-db to re-enrich stored stories)")
        raise typer.Exit(2)
    from producers.files import iter_paths
    from producers.publish import Publisher

    for path in paths:
        if str(path) != "-" and not path.exists():
            _err(f"no such file or directory: {path}")
            raise typer.Exit(2)
    ensure_schema(settings, auto=settings.embedded)
    run_id = uuid.uuid4().hex
    tty = sys.stderr.isatty() and not as_json
    publisher = Publisher(settings)
    started = time.perf_counter()
    with ExitStack() as stack:
        wake = None
        if settings.embedded:
            from worker.embedded import embedded_worker, precomputing

            stack.enter_context(precomputing(publisher))
            stack.enter_context(embedded_worker(publisher.app, [settings.queue_live, settings.queue_bulk]))
            wake = stack.enter_context(_tasks_finished())
        progress = stack.enter_context(_progress(None, "publishing", tty))
        task = progress.add_task("published", total=None)
        ids = publisher.publish(mapping(iter_paths(paths, source=source, settings=settings)), live=live,
                                run_id=run_id,
                                on_sent=lambda batch: progress.advance(task, len(batch)))
        progress.update(task, total=len(ids), completed=len(ids))
        log.info("replay_published", run_id=run_id, deliveries=len(ids))
        counts: dict[str, int] = {}
        if wait and ids:
            counts = _wait(settings, run_id, len(ids), progress, timeout, wake=wake)
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {"received": len(ids)}
    summary.update({key: counts.get(key, 0) for key in SUMMARY_KEYS[1:]})
    summary.update({"seconds": round(seconds, 3),
                    "stories_per_second": round(len(ids) / seconds, 1) if seconds > 0 else 0.0,
                    "run_id": run_id})
    if not wait:
        summary["waited"] = False
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        _print_summary(summary)
    if wait and sum(counts.get(k, 0) for k in SUMMARY_KEYS[1:]) < len(ids):
        raise typer.Exit(1)


@contextmanager
def _tasks_finished() -> Iterator[threading.Event]:
    """An event set each time a task of this process finishes (Celery's ``task_postrun``, sent once
    the task's transaction has committed): the embedded worker's batches, which :func:`_wait` then
    counts at once instead of at its next poll, up to half a second later."""
    from celery.signals import task_postrun

    event = threading.Event()

    def finished(**_: Any) -> None:
        event.set()

    task_postrun.connect(finished, weak=False)
    try:
        yield event
    finally:
        task_postrun.disconnect(finished)


def _wait(settings: Settings, run_id: str, total: int, progress: Any, timeout: float,
          count: Callable[[Any, str], dict[str, int]] | None = None,
          wake: threading.Event | None = None) -> dict[str, int]:
    """Poll the database until ``total`` outcomes of ``run_id`` are committed (``count``: the run's
    outcomes so far, by kind; deliveries by status unless given). ``wake``, when set, ends a pause
    between polls early (see :func:`_tasks_finished`)."""
    from models.ingest import status_counts
    from models.session import session_factory

    count = count or status_counts
    sessions = session_factory(settings.database_url)
    task = progress.add_task("processed", total=total)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last_done, last_change, warned = -1, time.monotonic(), False
    interval = 0.05
    while True:
        with sessions() as session:
            counts = count(session, run_id)
        done = sum(counts.values())
        progress.update(task, completed=done)
        if done >= total:
            return counts
        now = time.monotonic()
        if done != last_done:
            last_done, last_change = done, now
        elif not warned and now - last_change > 30:
            warned = True
            log.warning("replay_waiting", processed=done, published=total,
                        hint="no progress for 30 s: is an `akhbar worker` running against this broker?")
        if deadline is not None and now > deadline:
            log.error("replay_timeout", processed=done, published=total)
            return counts
        if wake is None:
            time.sleep(interval)
        else:
            wake.wait(interval)
            wake.clear()
        interval = min(interval * 1.5, 0.5)


def _replay_from_db(settings: Settings, *, since: str | None, source: str | None, everything: bool,
                    wait: bool, as_json: bool, timeout: float) -> None:
    """``replay --from-db``: stored stories enriched again through the queue (worker/reenrich.py).

    Selects the stories, publishes their ids as ``akhbar.reenrich`` messages on the bulk queue,
    then waits until each has its outcome record for this run (embedded mode: an in-process worker
    consumes them) and summarizes: stories selected, updated, unchanged, failed, missing, and for
    each enrichment field, in how many stories it changed.
    """
    from models.reenrich import outcome_counts
    from models.session import session_factory
    from producers.publish import Publisher
    from worker import reenrich
    from worker.stages.enrich import ENRICHMENT_VERSION

    try:
        since_at = reenrich.parse_since(since) if since else None
    except ValueError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    ensure_schema(settings, auto=settings.embedded)
    run_id = uuid.uuid4().hex
    tty = sys.stderr.isatty() and not as_json
    sessions = session_factory(settings.database_url)
    started = time.perf_counter()
    with sessions() as session:
        story_ids = reenrich.select(session, everything=everything, since=since_at, source=source)
    log.info("reenrich_selected", run_id=run_id, stories=len(story_ids), everything=everything, source=source,
             since=since_at.isoformat() if since_at else None, enrichment_version=ENRICHMENT_VERSION)
    done = 0
    if story_ids:
        app_ = Publisher(settings).app
        with ExitStack() as stack:
            if settings.embedded:
                from worker.embedded import embedded_worker

                stack.enter_context(embedded_worker(app_, [settings.queue_bulk]))
            progress = stack.enter_context(_progress(len(story_ids), "publishing", tty))
            task = progress.add_task("published", total=len(story_ids))
            messages = reenrich.send(app_, story_ids, run_id=run_id, queue=settings.queue_bulk,
                                     on_sent=lambda n: progress.advance(task, n))
            log.info("reenrich_published", run_id=run_id, stories=len(story_ids), messages=messages)
            if wait:
                counts = _wait(settings, run_id, len(story_ids), progress, timeout, outcome_counts)
                done = sum(counts.values())
    seconds = time.perf_counter() - started
    with sessions() as session:
        summary = reenrich.run_summary(session, run_id, selected=len(story_ids))
    summary.update({"seconds": round(seconds, 3),
                    "stories_per_second": round(len(story_ids) / seconds, 1) if seconds > 0 else 0.0,
                    "run_id": run_id, "enrichment_version": ENRICHMENT_VERSION})
    if not wait:
        summary["waited"] = False
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        _print_reenrich_summary(summary)
    if wait and (done < len(story_ids) or summary["failed"]):
        raise typer.Exit(1)


def _print_reenrich_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"re-enrichment to {summary['enrichment_version']}", show_header=False)
    for key in ("selected", "updated", "unchanged", "failed", "missing", "seconds", "stories_per_second"):
        table.add_row(key, str(summary.get(key, "")))
    for name, n in summary["changed"].items():
        table.add_row(f"{name} changed in", f"{n} stories")
    Console().print(table)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="replay", show_header=False)
    for key in (*SUMMARY_KEYS, "seconds", "stories_per_second"):
        table.add_row(key, str(summary.get(key, "")))
    Console().print(table)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Worker processes.")] = 2,
    queues: Annotated[str | None, typer.Option(
        "--queues", "-Q", help="Comma-separated queues, first consumed first.")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo, threads.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
) -> None:
    """Run a Celery worker with akhbar's settings (any number, on any machine)."""
    settings = _settings()
    if settings.embedded:
        _err("AKHBAR_REDIS_URL is not set: a separate worker needs a Redis broker "
             "(in embedded mode `akhbar replay` runs its own worker)")
        raise typer.Exit(2)
    ensure_schema(settings, auto=False)
    from worker.app import create_app

    celery_app = create_app(settings)
    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}",
            f"--queues={queues or f'{settings.queue_live},{settings.queue_bulk}'}", "--without-gossip",
            "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)


def export_row(delivery: Any, story: Any) -> dict[str, Any]:
    """One delivery in the export format (documented in the README; keep it stable)."""
    from producers.records import split_paragraphs

    body = "\n".join(split_paragraphs(delivery.body, delivery.format)) if delivery.body else delivery.body
    return {
        "delivery_id": delivery.id,
        "source": delivery.source,
        "status": delivery.status,
        "story_id": delivery.story_id,
        "duplicate_of": delivery.duplicate_of,
        "version": delivery.version,
        "title": delivery.title,
        "body": body,
        "normalized_title": story.normalized_title if story is not None else None,
        "language": story.language if story is not None else None,
        "enrichment": story.enrichment if story is not None else None,
        "error": delivery.error,
        "received_at": delivery.received_at.isoformat(),
        "processed_at": delivery.processed_at.isoformat() if delivery.processed_at else None,
    }


@app.command()
def export(
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """One JSON line per delivery, in receipt order, each with its story's versions and what
    changed between them (``story_versions``; null for a delivery without a story)."""
    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from models.queries import iter_export
    from models.session import session_factory

    stream = out.open("wb") if out else sys.stdout.buffer
    count = 0
    try:
        with session_factory(settings.database_url)() as session:
            for delivery, story, versions in iter_export(session):
                row = export_row(delivery, story)
                row["story_versions"] = versions
                stream.write(orjson.dumps(row) + b"\n")
                count += 1
    finally:
        if out:
            stream.close()
        else:
            stream.flush()
    log.info("export_written", deliveries=count, out=str(out) if out else "stdout")


@stories_app.command("list")
def stories_list(
    limit: Annotated[int, typer.Option(help="How many stories.")] = 20,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """The most recent stories."""
    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from models.queries import list_stories
    from models.session import session_factory

    with session_factory(settings.database_url)() as session:
        rows = list_stories(session, limit=limit, source=source)
    if as_json:
        for story, n in rows:
            typer.echo(orjson.dumps({"story_id": story.id, "source": story.source, "title": story.title,
                                     "version": story.version, "deliveries": n,
                                     "language": story.language}).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "source", "title", "versions", "deliveries", "language")
    for story, n in rows:
        table.add_row(str(story.id), story.source, (story.title or "")[:70], str(story.version), str(n),
                      story.language or "")
    Console().print(table)


@stories_app.command("show")
def stories_show(
    story_id: int, as_json: Annotated[bool, typer.Option("--json", help="JSON.")] = False
) -> None:
    """One story: its text, enrichment, versions (with what changed) and deliveries."""
    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from models.queries import story_detail
    from models.session import session_factory

    with session_factory(settings.database_url)() as session:
        detail = story_detail(session, story_id)
    if detail is None:
        _err(f"no story {story_id}")
        raise typer.Exit(1)
    story = detail["story"]
    doc = {
        "story_id": story.id, "source": story.source, "source_id": story.source_id, "title": story.title,
        "paragraphs": story.paragraphs, "normalized_title": story.normalized_title,
        "language": story.language,
        "published_at": story.published_at.isoformat() if story.published_at else None,
        "version": story.version, "withdrawn": story.withdrawn, "enrichment": story.enrichment,
        "enrichment_version": story.enrichment_version,
        "versions": [{"version": v.version, "delivery_id": v.delivery_id, "title": v.title,
                      "changes": v.changes, "created_at": v.created_at.isoformat()}
                     for v in detail["versions"]],
        "deliveries": [{**d, "received_at": d["received_at"].isoformat()} for d in detail["deliveries"]],
    }
    if as_json:
        typer.echo(orjson.dumps(doc).decode())
        return
    from rich.console import Console

    Console().print_json(orjson.dumps(doc).decode())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the migrations (run as a role allowed to change the schema)."""
    settings = _settings()
    from models.session import current_revision, upgrade

    upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {current_revision(settings.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the code's head revision."""
    settings = _settings()
    from models.session import current_revision, head_revision

    typer.echo(f"current: {current_revision(settings.database_url)}  "
               f"head: {head_revision(settings.database_url)}")


@app.command()
def produce(
    config: Annotated[Path, typer.Option(help="Sources file (see sources.toml).")] = Path("sources.toml"),
    only: Annotated[list[str] | None, typer.Option(help="Run only these sources (repeatable).")] = None,
) -> None:
    """Run the long-running producers of a sources file (feeds, drop folders, push) until stopped."""
    settings = _settings()
    if not config.exists():
        _err(f"no such sources file: {config}")
        raise typer.Exit(2)
    ensure_schema(settings, auto=settings.is_sqlite)
    from producers.runner import produce as run_produce

    run_produce(config, settings=settings, only=only or None)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="Sources file whose push sources to serve.")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Serve the HTTP push endpoint (POST deliveries as JSON; OpenAPI at /openapi.json)."""
    settings = _settings()
    ensure_schema(settings, auto=settings.is_sqlite)
    from producers.runner import serve as run_serve

    run_serve(config, host=host, port=port, settings=settings)


@sources_app.callback()
def sources(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False
) -> None:
    """Every source's state, last seen item, items, failures and next poll."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    ensure_schema(settings, auto=settings.is_sqlite)
    from producers.runner import source_rows

    rows = source_rows(settings.database_url)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    from rich.console import Console
    from rich.table import Table

    columns = ("name", "kind", "state", "last_seen", "next_poll", "items", "failures", "failure_score",
               "last_error")
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c])[:60] for c in columns))
    Console().print(table)


@sources_app.command("enable")
def sources_enable(name: str) -> None:
    """Re-enable a source (a running producer picks it up within 30 s)."""
    _set_source(name, "active")


@sources_app.command("disable")
def sources_disable(name: str) -> None:
    """Disable a source."""
    _set_source(name, "disabled")


def _set_source(name: str, state: str) -> None:
    settings = _settings()
    from producers.runner import set_source_state

    if not set_source_state(settings.database_url, name, state):
        _err(f"no source named {name!r} has run yet")
        raise typer.Exit(1)
    typer.echo(f"{name}: {state}")


# --- delivery guarantees: reconciliation and the dead-letter set -------------------------------

dlq_app = typer.Typer(help="Quarantined deliveries: list them, replay them after a fix.",
                       no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _queue_worker(settings: Settings, publisher: Any) -> Any:
    """In embedded mode, the in-process worker that consumes what this command publishes."""
    from contextlib import nullcontext

    if not settings.embedded:
        return nullcontext()
    from worker.embedded import embedded_worker

    return embedded_worker(publisher.app, [settings.queue_live, settings.queue_bulk])


def _wait_ids(settings: Settings, ids: list[str], timeout: float) -> dict[str, int]:
    """Wait until every delivery of ``ids`` is committed; their statuses by count."""
    from models.ingest import processed_deliveries
    from models.session import session_factory

    sessions = session_factory(settings.database_url)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while True:
        done: dict[str, str] = {}
        with sessions() as session:
            for start in range(0, len(ids), 1000):
                done.update(processed_deliveries(session, ids[start:start + 1000]))
        if len(done) >= len(ids) or (deadline is not None and time.monotonic() > deadline):
            counts: dict[str, int] = {}
            for status in done.values():
                counts[status] = counts.get(status, 0) + 1
            counts["pending"] = len(ids) - len(done)
            return counts
        time.sleep(0.25)


@app.command()
def reconcile(
    grace: Annotated[float | None, typer.Option(help=(
        "Seconds a published delivery may stay uncommitted before it counts as lost "
        "(default: AKHBAR_RECONCILE_GRACE)."))] = None,
    every: Annotated[float, typer.Option(help="Run every this many seconds until stopped (0: once).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print each pass's report as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Embedded mode: wait this long for what runs again.")] = 600,
    prune: Annotated[bool, typer.Option(help=(
        "Also delete settled ledger rows and old execution records past their retention "
        "(AKHBAR_LEDGER_RETENTION_DAYS, AKHBAR_EXECUTION_RETENTION_DAYS), at most every "
        "AKHBAR_RETENTION_INTERVAL seconds."))] = True,
) -> None:
    """Publish again what was published but never committed (lost on the way).

    Every delivery the publish ledger has and the store does not, once it is neither queued nor
    being processed. Safe to run any time, and periodically (--every). Also prunes the ledger and
    the execution records past their retention (--no-prune to skip).
    """
    import signal

    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from producers.publish import Publisher
    from worker.reconcile import Pruner, reconcile_once

    publisher = Publisher(settings)
    pruner = Pruner(settings) if prune else None

    def _prune() -> dict[str, Any]:
        pruned = pruner.maybe_prune() if pruner is not None else None
        return {} if pruned is None else {"pruned_ledger": pruned.ledger_deleted,
                                          "pruned_executions": pruned.executions_deleted}

    if settings.embedded:
        if every:
            _err("--every needs a Redis broker: in embedded mode nothing outlives the process that published")
            raise typer.Exit(2)
        # The in-memory queue of the process that published is gone with it: whatever it left
        # unsettled is lost, and runs here.
        with _queue_worker(settings, publisher):
            report = reconcile_once(settings, publisher, grace=grace, in_broker=set)
            pending = _wait_ids(settings, report.republished_ids, timeout)["pending"] \
                if report.republished_ids else 0
        _print_reconcile(report.as_dict() | {"pending": pending} | _prune(), as_json)
        raise typer.Exit(1 if pending else 0)
    stop = {"now": False}

    def _stop(_signum: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while True:
        try:
            report = reconcile_once(settings, publisher, grace=grace)
            _print_reconcile(report.as_dict() | _prune(), as_json)
        except Exception as exc:
            if not every:
                raise
            # The database or the broker is away: try again at the next tick.
            log.error("reconcile_failed", error=repr(exc))
        if not every:
            return
        deadline = time.monotonic() + every
        while time.monotonic() < deadline and not stop["now"]:
            time.sleep(min(0.2, every))
        if stop["now"]:
            return


def _print_reconcile(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(report).decode())
        return
    typer.echo(" ".join(f"{k}={v}" for k, v in report.items()))


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option(help=(
        "Only this reason: processing_error, worker_lost, timeout, retries_exhausted."))] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Quarantined deliveries, oldest first, with their reason and message."""
    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from models.ledger import quarantined
    from models.session import session_factory
    from worker.quarantine import QUARANTINE_CODES

    with session_factory(settings.database_url)() as session:
        rows = quarantined(session, codes=QUARANTINE_CODES, reason=reason, limit=limit)
        docs: list[dict[str, Any]] = [{"delivery_id": r.id, "source": r.source, "source_id": r.source_id,
                 "reason": (r.error or {}).get("code"), "message": (r.error or {}).get("message"),
                 "has_traceback": bool((r.error or {}).get("traceback")),
                 "received_at": r.received_at.isoformat(), "processed_at": r.processed_at.isoformat()}
                for r in rows]
    if as_json:
        for doc in docs:
            typer.echo(orjson.dumps(doc).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("delivery", "source", "source id", "reason", "message", "processed")
    for doc in docs:
        table.add_row(doc["delivery_id"], doc["source"], str(doc["source_id"] or "")[:30], doc["reason"],
                      str(doc["message"] or "")[:60], doc["processed_at"][:19])
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[str | None, typer.Option(help="Only deliveries quarantined for this reason.")] = None,
    delivery_id: Annotated[list[str] | None,
                           typer.Option("--id", help="Only these deliveries (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every replayed delivery is committed again.")] = True,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds (0: never).")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Run quarantined deliveries again, after a fix.

    They keep their delivery ids; their earlier attempts no longer count toward quarantine.
    """
    settings = _settings()
    ensure_schema(settings, auto=settings.embedded)
    from producers.publish import Publisher
    from worker.quarantine import replay_quarantined

    publisher = Publisher(settings)
    counts: dict[str, int] = {}
    with _queue_worker(settings, publisher):
        ids = replay_quarantined(settings, publisher, reason=reason, delivery_ids=delivery_id, limit=limit)
        if ids and (wait or settings.embedded):
            counts = _wait_ids(settings, ids, timeout)
    summary: dict[str, Any] = {"replayed": len(ids), **counts}
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
    if counts.get("pending"):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
