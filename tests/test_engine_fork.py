"""A forked pool process takes over its parent's engine, and the worker's warm-up before the fork.

Real PostgreSQL, real ``os.fork``: the child reports through a pipe what it saw.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from models import Delivery, Execution, Story
from models.session import get_engine, normalize_url, session_factory

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` in a forked child process and return what it returned (or raised)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            out = json.dumps(fn()).encode()
        except BaseException as exc:  # reported to the parent, which fails the test
            out = json.dumps({"error": repr(exc)}).encode()
        os.write(write, out)
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(b"".join(chunks))
    assert "error" not in result, result["error"]
    return result


def _lookup(url: str) -> tuple[int, bool]:
    """Run the write path's first query; (the backend's pid, whether its SQL came from the cache)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        result = conn.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(["none"])))
        result.all()
        return backend, result.context.cache_hit == engine.dialect.CACHE_HIT


def test_a_forked_child_takes_over_the_engine_with_connections_of_its_own(module_pg: str) -> None:
    engine = get_engine(module_pg)
    _lookup(module_pg)  # compiled here, before the fork
    parent_conn = engine.connect()  # checked out while the child runs
    parent_backend = parent_conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    try:

        def child() -> dict[str, Any]:
            from models import session

            adopted = get_engine(module_pg)
            backend, cached = _lookup(module_pg)
            return {
                "same_engine": adopted is engine,
                "initialized": adopted.dialect.server_version_info is not None,
                "backend": backend,
                "cached": cached,
                "own_pool": adopted.pool is not parent_pool,
                "keys": [k[1] for k in session._engines if k[0] == normalize_url(module_pg)],
                "pid": os.getpid(),
            }

        parent_pool = engine.pool
        seen = _in_child(child)
        assert seen["same_engine"] and seen["initialized"] and seen["own_pool"]
        # Its own connection (a new backend), and the SQL the parent compiled, from the cache.
        assert seen["backend"] != parent_backend
        assert seen["cached"] is True
        assert seen["keys"] == [seen["pid"]]
        # The child never touched the parent's connection, and the parent keeps its own engine.
        assert parent_conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == parent_backend
        assert get_engine(module_pg) is engine and engine.pool is parent_pool
    finally:
        parent_conn.close()


_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"


def _counts(url: str) -> tuple[int, int, int]:
    with session_factory(url)() as session:
        return (session.scalar(select(func.count()).select_from(Delivery)) or 0,
                session.scalar(select(func.count()).select_from(Story)) or 0,
                session.scalar(select(func.count()).select_from(Execution)) or 0)


def test_the_warm_up_stores_nothing_keeps_no_connection_and_warms_the_children(module_pg: str) -> None:
    from akhbar.settings import Settings
    from worker.tasks import _warm_database

    settings = Settings(database_url=module_pg)
    engine = get_engine(module_pg)
    engine.dispose()
    before = _counts(module_pg)
    with engine.connect() as conn:
        open_before = conn.exec_driver_sql(_BACKENDS).scalar_one()
    engine.dispose()
    with capture_logs() as logs:
        _warm_database(settings)
    assert [e["event"] for e in logs if e["event"].startswith("warm_up")] == ["warm_up_done"]
    # The rehearsal's writes were rolled back, and its connection closed before any fork.
    assert engine.pool.status().endswith("Current Checked out connections: 0")
    assert "Connections in pool: 0 " in engine.pool.status()
    assert _counts(module_pg) == before
    with engine.connect() as conn:
        assert conn.exec_driver_sql(_BACKENDS).scalar_one() == open_before
    engine.dispose()

    def child() -> dict[str, Any]:
        from sqlalchemy.orm import Session

        from models import ledger, neardup

        adopted = get_engine(module_pg)
        hits = []

        @event.listens_for(adopted, "after_execute")
        def _seen(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any, result: Any) -> None:
            hits.append(result.context.cache_hit == adopted.dialect.CACHE_HIT)

        with Session(adopted) as session:
            neardup.candidate_holders(session, ["none"])
            ledger.history(session, ["none"])
        return {"hits": hits, "initialized": adopted.dialect.server_version_info is not None}

    seen = _in_child(child)
    # The write path's SQL was compiled before the fork: the child finds it in the cache.
    assert seen["initialized"] and seen["hits"] and all(seen["hits"])


def test_a_database_that_is_away_only_skips_the_warm_up() -> None:
    from akhbar.settings import Settings
    from worker.tasks import _warm_database

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/akhbar"
    with capture_logs() as logs:
        _warm_database(Settings(database_url=url))
    skipped = [e for e in logs if e["event"] == "warm_up_skipped"]
    assert len(skipped) == 1 and "OperationalError" in skipped[0]["error"]
    engine = get_engine(url)
    assert "Connections in pool: 0 " in engine.pool.status()
    # Nothing was initialized: a pool process initializes the dialect on its first connection.
    assert getattr(engine.dialect, "server_version_info", None) is None
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
