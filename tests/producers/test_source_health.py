"""Source health in the database: migration 0002 on SQLite and PostgreSQL, upserts, state changes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import models.sources  # the table must be on Base.metadata for the comparison
from models.base import Base
from models.session import get_engine, session_factory, upgrade
from models.sources import list_health, set_state, upsert_health
from producers.config import SourceStatus
from producers.runner import DatabaseHealth, set_source_state, source_rows


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'health.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    if request.param == "postgresql":
        with session_factory(url).begin() as session:
            session.execute(models.sources.SourceHealth.__table__.delete())
    return url


def test_migration_matches_the_model(db_url: str) -> None:
    with get_engine(db_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [d for d in diffs if "source_health" in repr(d)]
    assert mine == []


def test_status_round_trip_and_state_changes(db_url: str) -> None:
    store = DatabaseHealth(db_url)
    assert store.load("wire-feed") is None
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = SourceStatus(
        "wire-feed",
        "feed",
        last_seen=when,
        last_poll=when,
        next_poll=when,
        items=12,
        failures=3,
        consecutive_failures=2,
        failure_score=1.5,
        etag='"abc"',
        last_modified="Fri, 02 Jan 2026 03:04:05 GMT",
        last_error="http_503: HTTP 503",
        cursor={"seen": ["a", "b"], "watch_since": when.isoformat()},
    )
    store.save(status)
    assert store.load("wire-feed") == status
    status.items, status.state = 13, "quiet"
    store.save(status)
    store.save(SourceStatus("inbox", "dropfolder", items=4))
    loaded = store.load("wire-feed")
    assert loaded is not None and loaded.items == 13 and loaded.state == "quiet"

    rows = source_rows(db_url)
    assert [(r["name"], r["kind"], r["items"]) for r in rows] == [
        ("inbox", "dropfolder", 4),
        ("wire-feed", "feed", 13),
    ]
    status.state = "disabled"
    store.save(status)
    assert set_source_state(db_url, "wire-feed", "active")
    enabled = store.load("wire-feed")
    assert enabled is not None and enabled.state == "active" and enabled.failure_score == 0.0
    assert enabled.next_poll is None and enabled.items == 13
    assert not set_source_state(db_url, "nope", "active")
    with session_factory(db_url).begin() as session:
        assert [r.name for r in list_health(session, state="active")] == ["inbox", "wire-feed"]
        assert [r.name for r in list_health(session, kind="dropfolder")] == ["inbox"]
        with pytest.raises(ValueError, match="state must be"):
            set_state(session, "inbox", "sleeping")
        with pytest.raises(ValueError, match="unknown source health fields"):
            upsert_health(session, "inbox", colour="red")
