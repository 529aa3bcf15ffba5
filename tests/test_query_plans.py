"""The batch lookups use their indexes on a fresh database, however its tables grew since they were
planned.

A new database has no planner statistics until autovacuum's first ANALYZE (a minute or more), and
psycopg prepares a statement run five times on a connection, after which PostgreSQL may keep one
generic plan for it. A plan made while ``executions`` or ``fingerprints`` held a few rows is a
sequential scan; kept while they grow to tens of thousands of rows, every batch scans them whole,
so the first minutes of a new deployment (and every benchmark run) slow down as they go.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from models import ingest as queries
from models import ledger
from models.session import session_factory

GROWN = 20_000
BATCH = 50


def _fill(conn, rows: int, offset: int) -> list[str]:
    ids = [str(uuid.UUID(int=offset + i)) for i in range(rows)]
    conn.execute(text(
        "INSERT INTO executions (delivery_id, task_id, attempt, worker, pid, started_at, outcome)"
        " SELECT u, 'task', 0, 'worker', 1, now(), 'stored' FROM unnest(CAST(:ids AS varchar[])) AS u"),
        {"ids": ids})
    conn.execute(text(
        "INSERT INTO fingerprints (content_hash, delivery_id, version)"
        " SELECT md5(u), u, 1 FROM unnest(CAST(:ids AS varchar[])) AS u"), {"ids": ids})
    conn.execute(text(
        "INSERT INTO source_keys (source, source_id, delivery_id, version)"
        " SELECT 'wire', u, u, 1 FROM unnest(CAST(:ids AS varchar[])) AS u"), {"ids": ids})
    return ids


def _hashes(session, ids: list[str]) -> list[str]:
    """The content hashes _fill gave these ids' fingerprints."""
    sql = text("SELECT md5(u) FROM unnest(CAST(:ids AS varchar[])) AS u")
    return list(session.scalars(sql, {"ids": ids}))


def _lookups(session, ids: list[str]) -> None:
    queries.key_holders(session, [("wire", i) for i in ids], _hashes(session, ids))
    ledger.history(session, ids)


def _plans(session, ids: list[str]) -> str:
    """EXPLAIN of the two lookups as the worker's connection would plan them now."""
    conn = session.connection()
    out = []
    holders = {"s": ["wire"] * len(ids), "i": ids, "h": _hashes(session, ids)}
    for sql, params in ((queries._HOLDERS_SQL, holders),
                        (ledger._HISTORY_SQL, {"ids": ids, "failed": list(ledger.FAILED_OUTCOMES)})):
        out += [row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql, params)]
    return "\n".join(out)


@pytest.mark.parametrize("scan", ["executions", "fingerprints", "source_keys"])
def test_a_lookup_uses_its_index_after_the_table_grew_without_statistics(module_pg: str, scan: str) -> None:
    sessions = session_factory(module_pg)
    with sessions() as session:
        session.execute(text("TRUNCATE executions, fingerprints, source_keys"))
        for table in ("executions", "fingerprints", "source_keys"):
            # No ANALYZE from autovacuum while the test runs: the statistics stay missing.
            session.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        small = _fill(session.connection(), 20, 0)
        session.commit()
        # Planned (and, past psycopg's threshold, prepared) while the tables are nearly empty.
        for _ in range(8):
            _lookups(session, small)
        session.commit()
        grown = _fill(session.connection(), GROWN, 1_000)
        session.commit()
        for _ in range(3):
            _lookups(session, grown[:BATCH])
        generic = session.scalar(text(
            "SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements"
            " WHERE statement LIKE :s"), {"s": f"%FROM {scan}%"})
        assert generic == 0, f"a generic plan of the {scan} lookup was reused after the table grew"
        plans = _plans(session, grown[:BATCH])
        scans = [line for line in plans.splitlines() if f" on {scan}" in line]
        assert scans, plans
        assert all("Seq Scan" not in line for line in scans), plans
