"""Engines and sessions, one engine per process (created lazily, never at import; a forked child
takes over its parent's with a pool of its own)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[tuple[str, int], Engine] = {}


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling defeats SAVEPOINT and lets two writers deadlock on lock
    # upgrade; take it over as SQLAlchemy documents, and open write transactions IMMEDIATE so a
    # second writer waits on busy_timeout instead of failing.
    # https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes in WAL mode
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get("sqlite_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# TOAST compression of the large values PostgreSQL writes: a new story stores its text about six
# times (body in stories, versions and deliveries; paragraphs twice; the match form), and pglz, the
# server default, costs the database two to three times what lz4 does for these values (0.84
# against 0.32 ms per row of three copies of a corpus story). Values already stored keep theirs:
# PostgreSQL reads both. A server built without lz4 keeps its default.
TOAST_COMPRESSION = "lz4"

# Planner settings of akhbar's own connections (nothing server-wide changes):
# - plan_cache_mode: psycopg prepares a statement run five times on a connection, and PostgreSQL
#   may then keep one generic plan for it. One made while a new database's tables held a few rows
#   (a sequential scan, right then) would be kept while they grow to millions of rows, until
#   autovacuum's first ANALYZE. The batch statements are planned anew instead, at about 0.2 ms a
#   statement of 50 stories.
# - random_page_cost: the tables and indexes a worker reads (keys, fingerprints, executions) are
#   the recently written ones, in memory; the default of 4 prices an index probe as a disk seek.
#   1.1 is the usual value for data in memory or on SSDs.
PLANNER_SETTINGS = {"plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}


def _postgresql_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        import psycopg

        with dbapi_connection.cursor() as cursor:
            for name, value in PLANNER_SETTINGS.items():
                cursor.execute(f"SET {name} = {value}")
        dbapi_connection.commit()
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET default_toast_compression = {TOAST_COMPRESSION}")
            dbapi_connection.commit()
        except psycopg.Error:
            dbapi_connection.rollback()


def _json_dumps(value: Any) -> str:
    # SQLAlchemy's default json.dumps writes each Arabic letter as a 6-byte \uXXXX escape in the
    # JSON columns (paragraphs, enrichment, records); orjson writes UTF-8, and faster.
    return orjson.dumps(value).decode("utf-8")


def get_engine(url: str, **kwargs: Any) -> Engine:
    """The engine for ``url`` in this process.

    A forked child takes over the engine its parent built, with a new, empty pool (see
    :func:`dispose_inherited`): never a connection of the parent's, but the dialect the parent
    initialized and the SQL it compiled, instead of a new engine that initializes its dialect on its
    first connection and compiles every statement again.
    """
    url = normalize_url(url)
    kwargs.setdefault("json_serializer", _json_dumps)
    pid = os.getpid()
    key = (url, pid)
    engine = _engines.get(key)
    if engine is None:
        inherited = [k for k in _engines if k[0] == url and k[1] != pid]
        if inherited:
            engine = _adopt(inherited[0], pid)
    if engine is None:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
            _sqlite_setup(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, **kwargs)
            if engine.dialect.driver == "psycopg":
                _postgresql_setup(engine)
        _engines[key] = engine
    return engine


def _adopt(key: tuple[str, int], pid: int) -> Engine:
    """Make the engine a parent process left under ``key`` this process's, with a pool of its own.

    ``dispose(close=False)`` replaces the pool without touching the parent's connections (their
    sockets are the parent's), as the SQLAlchemy docs prescribe for a forked child; the pool's event
    listeners (the connect setup above) carry over to the new pool.
    https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork
    """
    engine = _engines.pop(key)
    engine.dispose(close=False)
    _engines[(key[0], pid)] = engine
    return engine


def dispose_inherited() -> None:
    """After a fork, give this process a new, empty pool in each engine inherited from the parent
    (dropping the parent's connections without closing them)."""
    pid = os.getpid()
    for key in [k for k in _engines if k[1] != pid]:
        if (key[0], pid) in _engines:  # this process already has its own
            _engines.pop(key).dispose(close=False)
        else:
            _adopt(key, pid)


def session_factory(url: str, *, write: bool = False) -> sessionmaker[Session]:
    """A sessionmaker; ``write=True`` opens SQLite transactions with BEGIN IMMEDIATE."""
    engine = get_engine(url)
    bind = engine.execution_options(sqlite_write=True) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(url: str, *, write: bool = False) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with session_factory(url, write=write).begin() as session:
        yield session


MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()
