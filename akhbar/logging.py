"""structlog, configured once, owning stdlib logging too.

Celery, kombu and SQLAlchemy records go through the same processors and renderer as akhbar's own
events: JSON lines when stderr is not a TTY, the console renderer when it is. Context bound with
``structlog.contextvars`` (task_id, delivery_id, correlation_id, ...) appears on every line.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import orjson
import structlog

_configured = False


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    # orjson writes Arabic as UTF-8 rather than \uXXXX escapes, and is several times faster.
    return orjson.dumps(obj, default=default or str).decode("utf-8")


def configure_logging(level: str = "INFO", fmt: str = "auto", *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
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
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}
        },
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
