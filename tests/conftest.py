"""Session-wide fixtures: a fresh PostgreSQL database and a private Redis key prefix per run.

Every test session creates its own database on the machine's PostgreSQL and its own key prefix on
the machine's Redis, and removes both at the end, so that concurrent runs never collide.
"""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "articles.jsonl.gz"
SEEDS = ROOT / "seeds"

PG_ADMIN_URL = os.environ.get("AKHBAR_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("AKHBAR_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def run_token() -> str:
    """A short token unique to this test session, used in database names and key prefixes."""
    return f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def pg_url(run_token: str) -> Iterator[str]:
    """A SQLAlchemy URL to a fresh PostgreSQL database, dropped after the session."""
    name = f"akhbar_test_{run_token}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_prefix(run_token: str) -> Iterator[str]:
    """A Redis key prefix private to this session; every key under it is deleted afterwards."""
    prefix = f"akhbar-test-{run_token}"
    client = redis.Redis.from_url(REDIS_BASE_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_BASE_URL}: {exc}")
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()
    # The running-mark files this session's dead worker processes left (worker/marks.py): a worker
    # node started later would publish them to Redis.
    from worker import marks

    marks.forget(prefix, marks.directory(REDIS_BASE_URL))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_BASE_URL


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    if not CORPUS.exists():
        pytest.fail(f"the development corpus is missing: expected {CORPUS} (see ../shared/corpus/SOURCES.md)")
    return CORPUS


def read_corpus(limit: int | None = None) -> list[dict]:
    """The first ``limit`` articles of the shared corpus (all if None)."""
    if not CORPUS.exists():
        pytest.fail(f"the development corpus is missing: expected {CORPUS}")
    rows = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(__import__("json").loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str) -> str:
    """The session's PostgreSQL database, migrated to head with Alembic (never create_all)."""
    from models.session import upgrade

    upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="module")
def module_pg(run_token: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated PostgreSQL database private to one test module (its stories never meet the
    rolled-back tests' counts), dropped afterwards."""
    from models.session import get_engine, upgrade

    name = f"akhbar_test_{run_token}_{request.module.__name__.rsplit('.', 1)[-1]}"[:63]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    upgrade(url)
    yield url
    get_engine(url).dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def db_session(migrated_pg: str) -> Iterator[object]:
    """A session inside an outer transaction that is rolled back after the test.

    SQLAlchemy's "joining a session into an external transaction" recipe: the code under test may
    commit and open savepoints; nothing it does survives the test.
    https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#joining-a-session-into-an-external-transaction-such-as-for-test-suites
    """
    from sqlalchemy.orm import Session

    from models.session import get_engine

    connection = get_engine(migrated_pg).connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture()
def committed(migrated_pg: str) -> Iterator[tuple[object, str]]:
    """Sessions that commit, on a source name of this test's own; its rows are removed afterwards."""
    from sqlalchemy import delete, select

    from models import Delivery as DeliveryRow
    from models import Fingerprint, SourceKey, Story, StoryVersion
    from models.session import session_factory

    source = f"race-{uuid.uuid4().hex[:8]}"
    sessions = session_factory(migrated_pg, write=True)
    yield sessions, source
    with sessions.begin() as s:
        ids = s.scalars(select(Story.id).where(Story.source == source)).all()
        s.execute(delete(DeliveryRow).where(DeliveryRow.source == source))
        s.execute(delete(SourceKey).where(SourceKey.source == source))
        s.execute(delete(Fingerprint).where(Fingerprint.story_id.in_(ids)))
        s.execute(delete(StoryVersion).where(StoryVersion.story_id.in_(ids)))
        s.execute(delete(Story).where(Story.id.in_(ids)))


def expected_enrichment(msg: Any) -> dict[str, Any]:
    """The enrichment of the story whose text ``msg`` holds, computed directly."""
    from worker.stages import enrich as enrich_stage
    from worker.stages import normalize as normalize_stage

    record = msg.record
    norm = normalize_stage.normalize(title=record.title, body=record.body, format=record.format)
    return enrich_stage.enrich(title=record.title, body=record.body, paragraphs=norm.paragraphs,
                               match_title=norm.match_title, match_body=norm.match_body,
                               published_at=record.published_at, language_hint=record.language)
