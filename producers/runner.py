"""One producer process for many sources: ``akhbar produce --config sources.toml``.

:class:`Runner` starts every enabled source of a :class:`~producers.config.SourcesConfig`:

- feeds are polled by one scheduler loop, each poll on a small thread pool (``fetch_threads``),
  a feed never polled twice at once; a feed disabled for failures is re-read from the health
  store every ``refresh`` seconds, so ``akhbar sources enable NAME`` brings it back without a restart;
- each drop folder scans on its own thread;
- each push endpoint is served by uvicorn on its own thread.

All of them publish through the one publisher (live sources to the live queue) and save their
health through the one :class:`~producers.config.HealthStore` (:class:`DatabaseHealth` in
production: the ``source_health`` table). :func:`run` blocks until a stop event is set;
:func:`produce` is what the CLI calls.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from akhbar.settings import Settings, get_settings
from producers.config import (
    DropFolderSource,
    FeedSource,
    HealthStore,
    MemoryHealth,
    Publishing,
    PushSource,
    SourcesConfig,
    SourceStatus,
    load_config,
)
from producers.dropfolder import DropFolder
from producers.feeds import FeedPoller, PollResult
from producers.http import PushServer, create_app

log = structlog.get_logger(__name__)

__all__ = ["DatabaseHealth", "Runner", "produce", "run", "serve", "set_source_state", "source_rows"]


class DatabaseHealth:
    """A :class:`HealthStore` on the ``source_health`` table (``models.sources``)."""

    def __init__(self, database_url: str) -> None:
        from models.session import session_factory

        self._sessions = session_factory(database_url, write=True)

    def load(self, name: str) -> SourceStatus | None:
        from models.sources import get_health

        with self._sessions() as session:
            row = get_health(session, name)
            if row is None:
                return None
            return SourceStatus(
                name=row.name,
                kind=row.kind,
                state=row.state,
                last_seen=row.last_seen,
                last_poll=row.last_poll,
                next_poll=row.next_poll,
                items=row.items,
                failures=row.failures,
                consecutive_failures=row.consecutive_failures,
                failure_score=row.failure_score,
                etag=row.etag,
                last_modified=row.last_modified,
                last_error=row.last_error,
                cursor=dict(row.cursor or {}),
            )

    def save(self, status: SourceStatus) -> None:
        from models.sources import upsert_health

        fields = asdict(status)
        name = fields.pop("name")
        with self._sessions.begin() as session:
            upsert_health(session, name, **fields)


class Runner:
    """Runs the sources of one config until :meth:`stop`; :meth:`start` returns at once."""

    def __init__(
        self,
        config: SourcesConfig,
        publisher: Publishing,
        *,
        settings: Settings | None = None,
        health: HealthStore | None = None,
        only: Iterable[str] | None = None,
        refresh: float = 30.0,
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.settings = settings or get_settings()
        self.health = health or MemoryHealth()
        self.refresh = refresh
        wanted = set(only) if only is not None else None
        unknown = (wanted or set()) - {s.name for s in config.sources}
        if unknown:
            raise ValueError(f"no such source in the config: {', '.join(sorted(unknown))}")
        self.sources = [s for s in config.sources if s.enabled and (wanted is None or s.name in wanted)]
        self.stop_event = threading.Event()
        self.feeds: dict[str, FeedPoller] = {}
        self.folders: dict[str, DropFolder] = {}
        self.push: dict[str, PushServer] = {}
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: dict[str, Future[PollResult]] = {}

    def start(self) -> Runner:
        """Start every source; a source that cannot start (bad folder, port in use) raises here."""
        for src in self.sources:
            if isinstance(src, FeedSource):
                self.feeds[src.name] = FeedPoller(src, self.publisher, health=self.health)
            elif isinstance(src, DropFolderSource):
                folder = DropFolder(src, self.publisher, settings=self.settings, health=self.health)
                self.folders[src.name] = folder
                self._spawn(f"dropfolder-{src.name}", folder.run, self.stop_event)
            elif isinstance(src, PushSource):
                app = create_app(self.publisher, src, settings=self.settings, health=self.health)
                self.push[src.name] = PushServer(app, host=src.host, port=src.port).start()
        if self.feeds:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.fetch_threads, thread_name_prefix="feed"
            )
            self._spawn("feed-scheduler", self._schedule)
        log.info(
            "producer_started",
            feeds=sorted(self.feeds),
            dropfolders=sorted(self.folders),
            push={name: server.url for name, server in self.push.items()},
        )
        return self

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _schedule(self) -> None:
        assert self._executor is not None
        last_refresh = time.monotonic()
        while not self.stop_event.is_set():
            now = datetime.now(UTC)
            for name, feed in self.feeds.items():
                running = self._in_flight.get(name)
                if running is not None and not running.done():
                    continue
                if running is not None:
                    self._in_flight.pop(name)
                    if (exc := running.exception()) is not None:  # a bug, not a feed failure: keep going
                        log.error("feed_poll_crashed", source=name, error=repr(exc))
                if feed.due(now):
                    self._in_flight[name] = self._executor.submit(feed.poll)
            if time.monotonic() - last_refresh >= self.refresh:
                last_refresh = time.monotonic()
                self._refresh_disabled()
            self.stop_event.wait(self._sleep(now))

    def _sleep(self, now: datetime) -> float:
        upcoming = [
            f.status.next_poll
            for f in self.feeds.values()
            if f.status.state != "disabled" and f.status.next_poll is not None
        ]
        wait = min(((t - now).total_seconds() for t in upcoming), default=1.0)
        return min(max(wait, 0.05), 1.0)

    def _refresh_disabled(self) -> None:
        for name, feed in self.feeds.items():
            if feed.status.state != "disabled" or not feed.config.enabled:
                continue
            stored = self.health.load(name)
            if stored is not None and stored.state != "disabled":
                log.info("feed_reenabled", source=name)
                feed.status.state = stored.state
                feed.status.failure_score = stored.failure_score
                feed.status.consecutive_failures = stored.consecutive_failures
                feed.status.next_poll = stored.next_poll

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every source, letting polls and scans in progress finish (each is bounded)."""
        self.stop_event.set()
        for server in self.push.values():
            server.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for feed in self.feeds.values():
            feed.close()
        log.info("producer_stopped")

    def statuses(self) -> dict[str, SourceStatus]:
        """The current health of every running source."""
        found: dict[str, SourceStatus] = {n: f.status for n, f in self.feeds.items()}
        found.update({n: f.status for n, f in self.folders.items()})
        for name in self.push:
            loaded = self.health.load(name)
            if loaded is not None:
                found[name] = loaded
        return found


def run(
    config: SourcesConfig,
    publisher: Publishing,
    stop_event: threading.Event,
    *,
    settings: Settings | None = None,
    health: HealthStore | None = None,
    only: Iterable[str] | None = None,
) -> Runner:
    """Run the sources of ``config`` until ``stop_event`` is set; returns the stopped runner."""
    runner = Runner(config, publisher, settings=settings, health=health, only=only).start()
    try:
        stop_event.wait()
    finally:
        runner.stop()
    return runner


def _stop_on_signals(stop_event: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("producer_signal", signal=signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def produce(
    config_path: str | Path,
    *,
    settings: Settings | None = None,
    only: Iterable[str] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """``akhbar produce --config sources.toml``: run the configured sources until SIGINT/SIGTERM,
    publishing with :class:`producers.publish.Publisher` and keeping health in the database."""
    settings = settings or get_settings()
    _run_until_stopped(load_config(config_path), settings, stop_event, only=only)


def _run_until_stopped(config: SourcesConfig, settings: Settings, stop_event: threading.Event | None,
                       only: Iterable[str] | None = None) -> None:
    """Run ``config``'s sources with a publisher of their own until ``stop_event`` (or, on the main
    thread, SIGINT/SIGTERM) stops them, keeping source health in the database."""
    from producers.publish import Publisher

    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        _stop_on_signals(stop_event)
    publisher = Publisher(settings)
    try:
        run(config, publisher, stop_event, settings=settings, health=DatabaseHealth(settings.database_url),
            only=only)
    finally:
        publisher.close()


def serve(
    config_path: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    settings: Settings | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """``akhbar serve``: only the push endpoint(s) of ``config_path`` (or one with default settings
    and the tokens of the ``push_tokens`` setting), with ``host``/``port`` overriding the config."""
    settings = settings or get_settings()
    default = SourcesConfig.model_validate({"source": [{"kind": "push", "name": "push"}]})
    config = load_config(config_path) if config_path else default
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    pushes = [s.model_copy(update=overrides) for s in config.sources if isinstance(s, PushSource)]
    if not pushes:
        raise ValueError(f"{config_path} has no source of kind 'push'")
    _run_until_stopped(config.model_copy(update={"sources": pushes}), settings, stop_event)


def source_rows(database_url: str) -> list[dict[str, Any]]:
    """Every source's health as plain dicts, for ``akhbar sources``."""
    from models.session import session_factory
    from models.sources import list_health

    with session_factory(database_url)() as session:
        return [
            {
                "name": r.name,
                "kind": r.kind,
                "state": r.state,
                "last_seen": r.last_seen,
                "last_poll": r.last_poll,
                "next_poll": r.next_poll,
                "items": r.items,
                "failures": r.failures,
                "failure_score": r.failure_score,
                "last_error": r.last_error,
            }
            for r in list_health(session)
        ]


def set_source_state(database_url: str, name: str, state: str) -> bool:
    """``akhbar sources enable|disable NAME``; a running producer picks the change up within
    ``refresh`` seconds. False when no such source has run yet."""
    from models.session import session_factory
    from models.sources import set_state

    with session_factory(database_url, write=True).begin() as session:
        return set_state(session, name, state)
