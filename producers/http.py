"""HTTP push: an ASGI endpoint (Starlette) where senders POST deliveries.

``POST /v1/deliveries`` takes one delivery (a JSON object), a batch (a JSON array), or JSON Lines
(``Content-Type: application/x-ndjson``), authenticated with a bearer token. It answers
``202 Accepted`` with the delivery ids only once the publisher has confirmed every message. Every
record is published: invalid ones as rejections (kept with their raw bytes), reported per item in
the response. The checks, cheapest first:

- ``401 unauthorized``: no or unknown bearer token (tokens compared with ``hmac.compare_digest``);
- ``429 queue_full`` with ``Retry-After``: the queue is deeper than ``max_queue_depth``
  (backpressure: senders slow down instead of the workers drowning);
- ``413 too_large`` / ``too_many_items``: the body is over ``max_body_bytes`` (checked on
  ``Content-Length`` and again while reading) or holds more than ``max_batch`` records;
- ``415 unsupported_media_type`` / ``unsupported_encoding``: neither JSON nor JSON Lines, or a
  ``Content-Encoding`` other than gzip or deflate (compressed bodies are welcome; the size limit
  holds for the decoded body too, so a gzip bomb is cut off at the limit);
- ``400 invalid_json`` / ``empty_batch``: a body that is not JSON is still kept as one rejection
  (its delivery id is in the answer); an empty batch publishes nothing;
- ``503 unavailable`` with ``Retry-After``: the broker did not confirm the publish.

``GET /healthz`` reports liveness and the queue depth; ``GET /openapi.json`` describes the API.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from akhbar.settings import Settings, get_settings
from producers.config import HealthStore, Publishing, PushSource, SourceStatus
from producers.feeds import CappedDecoder, FetchError
from producers.records import iter_json_lines, parse_json_record
from worker.messages import Delivery, Rejection

log = structlog.get_logger(__name__)

JSON_TYPES = ("application/json", "text/json")
JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json-seq")


def load_tokens(config: PushSource, settings: Settings | None = None) -> dict[str, str]:
    """Bearer token -> sender name, from the config's ``tokens``, its ``tokens_file`` (``name:token``
    or bare-token lines; ``#`` comments) and the settings' ``push_tokens`` (``name:token`` pairs
    separated by commas), when that setting exists."""
    tokens: dict[str, str] = {}
    for sender, secret in config.tokens.items():
        tokens[secret.get_secret_value()] = sender
    if config.tokens_file is not None:
        for line in Path(config.tokens_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            sender, sep, token = line.partition(":")
            tokens[token.strip() if sep else sender] = sender.strip() if sep else config.name
    from_settings = getattr(settings, "push_tokens", None)
    if from_settings is not None:
        value = (
            from_settings.get_secret_value()
            if hasattr(from_settings, "get_secret_value")
            else str(from_settings)
        )
        for pair in value.split(","):
            sender, sep, token = pair.strip().partition(":")
            if sep and token:
                tokens[token] = sender
    return {token: sender for token, sender in tokens.items() if token}


def _sender(tokens: dict[str, str], header: str | None) -> str | None:
    if not header or header[:7].lower() != "bearer ":
        return None
    offered = header[7:].strip().encode("utf-8")
    found = None
    # Every token is compared, so the time taken does not tell which one nearly matched.
    for token, sender in tokens.items():
        if hmac.compare_digest(offered, token.encode("utf-8")):
            found = sender
    return found


def _error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, decoded from ``Content-Encoding`` (gzip, deflate), never more than ``cap`` bytes
    either on the wire or once decoded (:class:`FetchError` ``too_large`` past it)."""
    size = 0
    decoder = CappedDecoder(request.headers.get("content-encoding", ""), cap)
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise FetchError("too_large", "", hard=True)
        decoder.feed(chunk)
    return decoder.finish()


def _parse(body: bytes, *, media: str, sender: str, settings: Settings) -> list[Delivery | Rejection] | None:
    """The records of a request body; None when the body is not JSON at all."""
    max_bytes, max_depth = settings.max_delivery_bytes, settings.max_json_depth
    if media in JSONL_TYPES:
        return list(
            iter_json_lines(
                enumerate(body.splitlines(), start=1),
                default_source=sender,
                max_bytes=max_bytes,
                max_depth=max_depth,
            )
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list):
        # Each element goes through the one validation path with its own bytes.
        return [
            parse_json_record(
                orjson.dumps(element), default_source=sender, max_bytes=max_bytes, max_depth=max_depth
            )
            for element in value
        ]
    return [parse_json_record(body, default_source=sender, max_bytes=max_bytes, max_depth=max_depth)]


def _report(items: Iterable[Delivery | Rejection], ids: list[str]) -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = []
    for index, (item, delivery_id) in enumerate(zip(items, ids, strict=True)):
        if isinstance(item, Delivery):
            report.append({"index": index, "delivery_id": delivery_id, "status": "accepted", "id": item.id})
        else:
            report.append(
                {
                    "index": index,
                    "delivery_id": delivery_id,
                    "status": "rejected",
                    "id": item.source_id,
                    "code": item.code,
                    "message": item.message,
                }
            )
    return report


def create_app(
    publisher: Publishing,
    config: PushSource,
    *,
    settings: Settings | None = None,
    tokens: dict[str, str] | None = None,
    health: HealthStore | None = None,
) -> Starlette:
    """The push endpoint for one publisher; ``tokens`` (token -> sender) defaults to :func:`load_tokens`.

    With a ``health`` store, the endpoint's health (items, failures, last request) is saved after
    every publishing request.
    """
    settings = settings or get_settings()
    status = (health.load(config.name) if health else None) or SourceStatus(config.name, "push")
    status.state = "active"
    known = tokens if tokens is not None else load_tokens(config, settings)
    bound = log.bind(source=config.name)
    if not known:
        bound.warning("push_no_tokens", message="no bearer token configured: every request will get 401")

    async def _record(*, accepted: int, error: str | None) -> None:
        now = datetime.now(UTC)
        status.last_poll = now
        status.items += accepted
        if accepted:
            status.last_seen = now
        if error is not None:
            status.failures += 1
            status.last_error = error
        if health is not None:
            await run_in_threadpool(health.save, status)

    async def _deliveries(request: Request, sender: str | None) -> Response:
        if sender is None:
            return _error(
                401,
                "unauthorized",
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="akhbar"'},
            )
        depth = await run_in_threadpool(publisher.queue_depth)
        if depth > config.max_queue_depth:
            return _error(
                429,
                "queue_full",
                f"{depth} messages are waiting (limit {config.max_queue_depth})",
                headers={"Retry-After": str(config.retry_after)},
                queue_depth=depth,
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            return _error(413, "too_large", f"the body is over {config.max_body_bytes} bytes")
        media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media not in JSON_TYPES + JSONL_TYPES:
            return _error(
                415,
                "unsupported_media_type",
                "send application/json (an object or an array) or application/x-ndjson",
            )
        try:
            body = await _read_capped(request, config.max_body_bytes)
        except FetchError as exc:
            if exc.code == "too_large":
                return _error(413, "too_large", f"the body is over {config.max_body_bytes} bytes")
            if exc.code == "unsupported_encoding":
                return _error(
                    415, "unsupported_encoding", "Content-Encoding may be gzip, deflate or identity"
                )
            return _error(400, "bad_encoding", str(exc))
        items = _parse(body, media=media, sender=sender, settings=settings)
        invalid = items is None
        if items is None:
            # Not JSON at all: kept as one rejection, and the sender is told it was not accepted.
            items = [
                parse_json_record(
                    body,
                    default_source=sender,
                    max_bytes=settings.max_delivery_bytes,
                    max_depth=settings.max_json_depth,
                )
            ]
        if not items:
            return _error(400, "empty_batch", "the batch holds no record")
        if len(items) > config.max_batch:
            return _error(
                413, "too_many_items", f"{len(items)} records; at most {config.max_batch} per request"
            )
        try:
            ids = await run_in_threadpool(publisher.publish, items, live=config.live)
        except Exception as exc:  # the broker did not confirm: nothing is promised to the sender
            bound.error("push_publish_failed", sender=sender, error=str(exc), error_type=type(exc).__name__)
            await _record(accepted=0, error=f"publish failed: {type(exc).__name__}: {exc}")
            return _error(
                503,
                "unavailable",
                "the queue did not accept the deliveries; retry later",
                headers={"Retry-After": str(config.retry_after)},
            )
        report = _report(items, ids)
        accepted = sum(1 for r in report if r["status"] == "accepted")
        await _record(accepted=accepted, error=None)
        summary = {"accepted": accepted, "rejected": len(report) - accepted}
        if invalid:
            reason = items[0].message if isinstance(items[0], Rejection) else "not JSON"
            response = _error(400, "invalid_json", reason, delivery_ids=ids, items=report)
        else:
            response = JSONResponse({**summary, "delivery_ids": ids, "items": report}, status_code=202)
        response.summary = summary  # type: ignore[attr-defined]
        return response

    async def deliveries(request: Request) -> Response:
        started = time.monotonic()
        sender = _sender(known, request.headers.get("authorization"))
        response = await _deliveries(request, sender)
        bound.info(
            "push_request",
            sender=sender,
            status=response.status_code,
            client=request.client.host if request.client else None,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            **getattr(response, "summary", {}),
        )
        return response

    async def healthz(request: Request) -> Response:
        try:
            depth = await run_in_threadpool(publisher.queue_depth)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "queue_depth": depth, "max_queue_depth": config.max_queue_depth})

    spec = openapi(config)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    return Starlette(
        routes=[
            Route("/v1/deliveries", deliveries, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ]
    )


def _error_response(description: str, *, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return response


def openapi(config: PushSource) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the push endpoint (written out: the API is three routes)."""
    delivery = {
        "type": "object",
        "required": ["id", "body"],
        "properties": {
            "id": {
                "type": ["string", "integer"],
                "description": "the sender's id for this delivery",
                "maxLength": 512,
            },
            "body": {
                "type": "string",
                "minLength": 1,
                "description": "story text, paragraphs separated by \\n",
            },
            "title": {"type": ["string", "null"]},
            "source": {
                "type": ["string", "null"],
                "maxLength": 128,
                "description": "defaults to the sender name of the bearer token",
            },
            "url": {"type": ["string", "null"], "maxLength": 4096},
            "published_at": {"type": ["string", "null"], "format": "date-time"},
            "language": {"type": ["string", "null"], "maxLength": 16},
        },
        "additionalProperties": {"description": "kept as sent, in the delivery's extra fields"},
    }
    item = {
        "type": "object",
        "required": ["index", "delivery_id", "status"],
        "properties": {
            "index": {"type": "integer"},
            "delivery_id": {"type": "string", "description": "time-ordered UUIDv7 of the queued message"},
            "status": {"enum": ["accepted", "rejected"]},
            "id": {"type": ["string", "null"]},
            "code": {"type": "string", "description": "reason code of a rejected record"},
            "message": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "akhbar push",
            "version": "1",
            "description": "Push Arabic news stories to akhbar's ingestion queue.",
        },
        "paths": {
            "/v1/deliveries": {
                "post": {
                    "summary": "Publish one delivery or a batch",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Delivery"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Delivery"},
                                            "minItems": 1,
                                            "maxItems": config.max_batch,
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {"type": "string", "description": "one Delivery object per line"}
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "published; invalid records were kept as rejections",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                            },
                        },
                        "400": _error_response("not JSON (kept as one rejection) or an empty batch"),
                        "401": _error_response("missing or unknown bearer token"),
                        "413": _error_response(
                            f"body over {config.max_body_bytes} bytes or over {config.max_batch} records"
                        ),
                        "415": _error_response(
                            "content type is neither JSON nor JSON Lines, or encoding not gzip/deflate"
                        ),
                        "429": _error_response("the queue is full; retry after the given delay", retry=True),
                        "503": _error_response(
                            "the queue did not confirm; retry after the given delay", retry=True
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and queue depth",
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "string"},
                                            "queue_depth": {"type": "integer"},
                                            "max_queue_depth": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This description", "responses": {"200": {"description": "ok"}}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Delivery": delivery,
                "Item": item,
                "Accepted": {
                    "type": "object",
                    "required": ["accepted", "rejected", "delivery_ids", "items"],
                    "properties": {
                        "accepted": {"type": "integer"},
                        "rejected": {"type": "integer"},
                        "delivery_ids": {"type": "array", "items": {"type": "string"}},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "stable reason code"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }


class PushServer:
    """The push app served by uvicorn on a thread, stopped through ``stop()``."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        import socket

        import uvicorn

        # Binding here (not in uvicorn) makes port 0 usable: the chosen port is known at once.
        self.socket = socket.create_server((host, port), reuse_port=False)
        # Accepted connections inherit this: without it, Nagle's algorithm meets the client's
        # delayed ACK and every small answer waits ~40 ms.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = int(self.socket.getsockname()[1])
        self.host = host
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="push-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> PushServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the push server did not start")
        log.info("push_server_started", url=self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
