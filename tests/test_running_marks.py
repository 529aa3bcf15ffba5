"""The running marks' connection (worker.quarantine.RunningMarks) against the real Redis: marks sent
without waiting are read back in order, a connection the server closed is noticed and the next
mark goes out on a new one, error replies are logged, and a blocking connection goes through
redis-py's own calls."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

from worker.quarantine import Attempt, RunningMarks

ATTEMPT = Attempt(task_id="marks-task", attempt=0, worker="w", pid=1)


@pytest.fixture()
def admin(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=f"{redis_prefix}:marks*"):
        client.delete(key)
    client.close()


def _marks(redis_url: str, redis_prefix: str, *, timeout: float | None = 2, ttl: int = 600) -> RunningMarks:
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=2)
    return RunningMarks(client, f"{redis_prefix}:marks", ttl=ttl)


def test_marks_sent_without_waiting_are_read_back_in_order(redis_url, redis_prefix, admin) -> None:
    marks = _marks(redis_url, redis_prefix)
    for i in range(500):
        assert marks.mark(ATTEMPT, f"d{i}")
    assert marks._fd >= 0  # the socket's descriptor is written directly
    # Another connection (the redelivered message's) sees the last one once it has been answered.
    assert marks.read(ATTEMPT) == "d499"
    assert marks._pending == 0
    assert admin.get(marks._key(ATTEMPT)) == b"d499"
    assert 0 < admin.ttl(marks._key(ATTEMPT)) <= 600
    marks.clear(ATTEMPT)
    assert marks.read(ATTEMPT) is None


def test_a_connection_closed_by_the_server_is_noticed(redis_url, redis_prefix, admin) -> None:
    marks = _marks(redis_url, redis_prefix)
    assert marks.mark(ATTEMPT, "before")
    host, port = marks._conn._sock.getsockname()[:2]
    assert admin.client_kill(f"{host}:{port}")
    time.sleep(0.05)
    with capture_logs() as logs:
        assert marks.mark(ATTEMPT, "after")
        assert marks.read(ATTEMPT) == "after"
    assert any(e["event"] == "running_mark_reconnect" for e in logs), logs
    assert admin.get(marks._key(ATTEMPT)) == b"after"


def test_an_error_reply_is_logged(redis_url, redis_prefix, admin) -> None:
    marks = _marks(redis_url, redis_prefix, ttl=0)  # SET ... EX 0 is refused
    with capture_logs() as logs:
        assert marks.mark(ATTEMPT, "refused")
        assert marks.read(ATTEMPT) is None
    failed = [e for e in logs if e["event"] == "running_mark_failed"]
    assert failed and "expire" in failed[0]["error"], logs


@pytest.mark.parametrize("timeout", [None, 2])
def test_blocking_or_not_the_marks_agree(redis_url, redis_prefix, admin, timeout) -> None:
    marks = _marks(redis_url, redis_prefix, timeout=timeout)
    for i in range(50):
        assert marks.mark(ATTEMPT, f"d{i}")
    assert (marks._fd >= 0) is (timeout is not None)  # a blocking socket goes through redis-py
    assert marks.read(ATTEMPT) == "d49"
    marks.clear(ATTEMPT)
    assert marks.read(ATTEMPT) is None  # same connection: after the DEL
    assert admin.get(marks._key(ATTEMPT)) is None


def test_the_set_command_is_encoded_as_redis_py_encodes_it(redis_url, redis_prefix) -> None:
    marks = _marks(redis_url, redis_prefix, ttl=86400)
    conn = marks.client.connection_pool.get_connection()
    try:
        for attempt, delivery_id in [(ATTEMPT, "01a21c1d-89d7-7009-b524-3e8183fe9366"),
                                     (Attempt(task_id="té", attempt=12, worker="w", pid=1), "اخبار"),
                                     (ATTEMPT, "")]:
            expected = b"".join(conn.pack_command("SET", marks._key(attempt), delivery_id, "EX", 86400))
            assert marks._set_command(attempt, delivery_id) == expected
    finally:
        marks.client.connection_pool.release(conn)
