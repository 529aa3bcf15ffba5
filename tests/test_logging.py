"""Log lines: akhbar's events rendered directly, third-party stdlib records through the same sink."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog

from akhbar.logging import configure_logging


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)
    configure_logging("INFO", "json", force=True)
    try:
        yield sink
    finally:
        structlog.contextvars.clear_contextvars()
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        configure_logging("WARNING", "json", force=True)


def lines(sink: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in sink.getvalue().splitlines()]


def test_json_lines_carry_fields_context_and_utf8(stderr: io.StringIO) -> None:
    log = structlog.get_logger("akhbar.pipeline")
    structlog.contextvars.bind_contextvars(task_id="t-1", pid=7)
    log.info("stage_completed", stage="persist", duration_ms=1.5, title="خبر عاجل")
    log.debug("not_at_info")
    (line,) = lines(stderr)
    assert line["event"] == "stage_completed"
    assert line["level"] == "info"
    assert line["logger"] == "akhbar.pipeline"
    assert line["task_id"] == "t-1" and line["pid"] == 7
    assert line["stage"] == "persist" and line["duration_ms"] == 1.5
    assert str(line["timestamp"]).endswith("Z")
    # UTF-8, not \\u escapes
    assert "خبر عاجل" in stderr.getvalue()


def test_exceptions_and_unserializable_values(stderr: io.StringIO) -> None:
    log = structlog.get_logger("akhbar.tasks")
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("delivery_failed", exc_info=True, kind=ValueError)
    (line,) = lines(stderr)
    assert line["level"] == "error"
    assert "ValueError: boom" in str(line["exception"])
    assert line["kind"] == "<class 'ValueError'>"


def test_third_party_records_share_the_renderer_and_levels(stderr: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(task_id="t-2")
    logging.getLogger("celery.worker").info("worker %s ready", "w1")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")  # held at WARNING
    (line,) = lines(stderr)
    assert line == {"event": "worker w1 ready", "task_id": "t-2", "level": "info", "logger": "celery.worker",
                    "timestamp": line["timestamp"]}


def test_a_cached_logger_follows_reconfiguration(stderr: io.StringIO,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = structlog.get_logger("akhbar.reconfigured")
    log.info("first")
    other = io.StringIO()
    monkeypatch.setattr(sys, "stderr", other)
    configure_logging("WARNING", "json", force=True)
    log.info("dropped_below_warning")
    log.warning("second")
    assert [x["event"] for x in lines(stderr)] == ["first"]
    assert [x["event"] for x in lines(other)] == ["second"]
