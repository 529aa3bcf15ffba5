"""structlog, configured once, owning stdlib logging too.

Celery, kombu and SQLAlchemy records go through the same processors and renderer as akhbar's own
events: JSON lines when stderr is not a TTY, the console renderer when it is. Context bound with
``structlog.contextvars`` (task_id, delivery_id, correlation_id, ...) appears on every line.

akhbar's own events do not pass through the stdlib ``logging`` machinery: structlog renders each
one with orjson and writes the line to stderr itself, about a fifth of the cost of a LogRecord
through a handler and ``ProcessorFormatter`` (a worker writes five lines per story). Third-party
libraries log through stdlib; the root logger's handler renders their records with the same
processors and writes them through the same lock, one whole line per write.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

_configured = False
_LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20, "DEBUG": 10,
           "NOTSET": 0}
_METHOD_LEVELS = {"critical": 50, "fatal": 50, "exception": 40, "error": 40, "err": 40, "failure": 40,
                  "warning": 30, "warn": 30, "info": 20, "msg": 20, "log": 20, "debug": 10}


class _Sink:
    """Where lines go and from which level, read on every call: loggers cached on first use
    follow a later :func:`configure_logging` (a new stderr, another level)."""

    stream: IO[str] = sys.stderr
    level: int = logging.INFO
    lock = threading.RLock()


def _write(line: str) -> None:
    with _Sink.lock:
        stream = _Sink.stream
        stream.write(line)
        stream.flush()


class LineLogger:
    """structlog's output logger: writes each rendered line (newline included) to the sink."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        # structlog.stdlib.add_logger_name reads ``logger.name``.
        self.name = name or "root"

    def msg(self, line: str) -> None:
        _write(line)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _logger_factory(*args: Any) -> LineLogger:
    return LineLogger(args[0] if args and isinstance(args[0], str) else None)


def _drop_below_level(_logger: Any, method_name: str, event_dict: Any) -> Any:
    if _METHOD_LEVELS.get(method_name, 20) < _Sink.level:
        raise structlog.DropEvent
    return event_dict


def _utc_timestamp() -> str:
    """``TimeStamper(fmt="iso", utc=True)``'s string, the date and time formatted once a second.

    The same clock (``time.time_ns`` and ``datetime.now`` both read the system clock, microseconds
    floored) and the same text: ``2026-11-26T06:30:01.123456Z``, or without the fraction when the
    microseconds are zero, as ``datetime.isoformat`` writes it.
    """
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        text = datetime.fromtimestamp(second, tz=UTC).isoformat()
        cached[:] = [second, text[:-6]]  # without "+00:00"
    return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


_SECOND: list[Any] = [None, ""]
_MERGE_CONTEXT = structlog.contextvars.merge_contextvars
_STACK_INFO = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])


def _prepare(logger: Any, method_name: str, event_dict: Any) -> Any:
    """The chain before the renderer in one call, same keys in the same order: level filter,
    context variables, ``level``, ``logger``, ``timestamp``; then ``stack_info`` only when the
    event has the key (StackInfoRenderer), ``exc_info`` likewise (the exception processor)."""
    if _METHOD_LEVELS.get(method_name, 20) < _Sink.level:
        raise structlog.DropEvent
    event_dict = _MERGE_CONTEXT(logger, method_name, event_dict)
    event_dict["level"] = "warning" if method_name == "warn" else "error" if method_name == "exception" \
        else method_name
    record = event_dict.get("_record")
    event_dict["logger"] = logger.name if record is None else record.name
    event_dict["timestamp"] = _utc_timestamp()
    if "stack_info" in event_dict:
        event_dict = _STACK_INFO(logger, method_name, event_dict)
    if "exc_info" in event_dict:
        event_dict = _EXC_INFO[0](logger, method_name, event_dict)
    return event_dict


# The exception processor of the current format: format_exc_info for JSON lines, set_exc_info on a
# console.
_EXC_INFO: list[Any] = [structlog.processors.format_exc_info]


def _orjson_line(_logger: Any, _name: str, event_dict: Any) -> str:
    # orjson writes Arabic as UTF-8 rather than \uXXXX escapes, and is several times faster;
    # values it cannot serialize are written as their str().
    return orjson.dumps(event_dict, default=str, option=orjson.OPT_APPEND_NEWLINE).decode("utf-8")


class _ConsoleLine:
    def __init__(self, colors: bool) -> None:
        self.renderer = structlog.dev.ConsoleRenderer(colors=colors)

    def __call__(self, logger: Any, name: str, event_dict: Any) -> str:
        return f"{self.renderer(logger, name, event_dict)}\n"


class _StdlibBridge(logging.Handler):
    """The root logger's handler: third-party records, rendered by ``ProcessorFormatter``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _write(line)


# The processor list is one object for the life of the process, edited in place on reconfiguration,
# so that loggers cached on first use (and structlog.testing.capture_logs) see the current chain.
_PROCESSORS: list[Any] = []


def configure_logging(level: str = "INFO", fmt: str = "auto", *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _Sink.stream = sys.stderr
    _Sink.level = _LEVELS.get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = _orjson_line if json_lines else _ConsoleLine(colors=sys.stderr.isatty())
    # akhbar's own events: _prepare is _drop_below_level, the shared chain, StackInfoRenderer and
    # the exception processor in one call (a worker writes five lines per story).
    _EXC_INFO[0] = structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info
    _PROCESSORS[:] = [_prepare, renderer]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_logger_factory,
        # Every level method is a plain method; the level itself is checked by the first processor.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([structlog.processors.format_exc_info] if json_lines else []),
                    renderer,
                ],
                "foreign_pre_chain": shared,
            }
        },
        "handlers": {"stderr": {"()": _StdlibBridge, "formatter": "structlog"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # Per-statement SQL and per-message transport chatter are noise at INFO.
        "loggers": {
            "sqlalchemy.engine": {"level": "WARNING"},
            "kombu": {"level": "WARNING"},
            "alembic": {"level": "WARNING"},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.app.trace": {"level": "WARNING"},
        },
    })
    _configured = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)
