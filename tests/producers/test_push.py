"""HTTP push endpoint, served by uvicorn on 127.0.0.1: auth, limits, backpressure, batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest
from feedtools import RecordingPublisher, corpus_articles
from structlog.testing import capture_logs

from akhbar.settings import Settings
from producers.config import PushSource
from producers.http import PushServer, create_app, load_tokens
from worker.messages import Delivery, Rejection

TOKEN = "s3cret-token-for-wire-a"
SETTINGS = Settings(max_delivery_bytes=16 * 1024)
ARTICLES = corpus_articles(5)


@pytest.fixture
def push(recorder: RecordingPublisher) -> Iterator[tuple[httpx.Client, RecordingPublisher]]:
    config = PushSource(
        name="push",
        port=0,
        tokens={"wire-a": TOKEN},
        max_body_bytes=64 * 1024,  # type: ignore[dict-item]
        max_queue_depth=100,
        retry_after=7,
        max_batch=20,
    )
    server = PushServer(create_app(recorder, config, settings=SETTINGS), host="127.0.0.1", port=0).start()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        yield client, recorder
    server.stop()


def article(n: int, **extra: object) -> dict[str, object]:
    art = ARTICLES[n]
    return {"id": art["id"], "title": art["title"], "body": art["body"], "url": art["url"], **extra}


def test_one_delivery_is_published_and_answered_with_its_id(
    push: tuple[httpx.Client, RecordingPublisher],
) -> None:
    client, recorder = push
    with capture_logs() as logs:
        response = client.post("/v1/deliveries", json=article(0))
    assert response.status_code == 202
    data = response.json()
    assert data["accepted"] == 1 and data["rejected"] == 0 and len(data["delivery_ids"]) == 1
    (delivery,) = recorder.deliveries
    assert delivery.id == ARTICLES[0]["id"] and delivery.body == ARTICLES[0]["body"]
    assert delivery.source == "wire-a"  # the token's sender is the default source
    assert recorder.calls[0][1] is True  # live queue
    (event,) = [e for e in logs if e["event"] == "push_request"]
    assert event["source"] == "push" and event["sender"] == "wire-a" and event["status"] == 202
    assert event["accepted"] == 1


def test_batch_keeps_invalid_records_as_rejections(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    batch = [article(1), {"id": "no-body"}, article(2, source="other-wire", desk="سياسة"), "not an object"]
    response = client.post("/v1/deliveries", json=batch)
    assert response.status_code == 202
    data = response.json()
    assert (data["accepted"], data["rejected"]) == (2, 2)
    assert [i["status"] for i in data["items"]] == ["accepted", "rejected", "accepted", "rejected"]
    assert [i.get("code") for i in data["items"]] == [None, "missing_body", None, "not_an_object"]
    assert data["items"][1]["id"] == "no-body"
    items = recorder.items
    assert len(items) == 4 and [type(i) for i in items] == [Delivery, Rejection, Delivery, Rejection]
    assert (
        isinstance(items[2], Delivery)
        and items[2].source == "other-wire"
        and items[2].extra == {"desk": "سياسة"}
    )
    assert isinstance(items[1], Rejection) and orjson.loads(items[1].raw) == {"id": "no-body"}


def test_json_lines(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    body = b"\n".join(orjson.dumps(article(n)) for n in range(3)) + b"\n{broken\n"
    response = client.post("/v1/deliveries", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202 and response.json()["accepted"] == 3
    assert [r.code for r in recorder.rejections] == ["invalid_json"]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", "Bearer x"]
)
def test_bad_tokens_are_refused_and_nothing_is_published(
    push: tuple[httpx.Client, RecordingPublisher], header: str | None
) -> None:
    client, recorder = push
    headers = {"Authorization": header} if header is not None else {}
    with httpx.Client(base_url=str(client.base_url), headers=headers) as anonymous:
        response = anonymous.post("/v1/deliveries", json=article(0))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized" and response.headers["WWW-Authenticate"].startswith(
        "Bearer"
    )
    assert recorder.calls == []


def test_oversized_payloads_are_refused(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    big = article(0, body="خبر " * 40_000)
    response = client.post("/v1/deliveries", json=big)
    assert response.status_code == 413 and response.json()["error"] == "too_large"

    # Without Content-Length (chunked), the limit holds while reading.
    def chunks() -> Iterator[bytes]:
        yield b'{"id": "x", "body": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'"}'

    response = client.post("/v1/deliveries", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    too_many = [{"id": str(n), "body": "x"} for n in range(21)]
    response = client.post("/v1/deliveries", json=too_many)
    assert response.status_code == 413 and response.json()["error"] == "too_many_items"
    assert recorder.calls == []
    # One record over the per-delivery limit inside an accepted body is kept as a rejection.
    response = client.post("/v1/deliveries", json=[article(0), {"id": "big", "body": "x" * 20_000}])
    assert response.status_code == 202 and response.json()["items"][1]["code"] == "too_large"


def test_full_queue_answers_429_with_retry_after(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    recorder.depth = 101
    response = client.post("/v1/deliveries", json=article(0))
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert response.json()["error"] == "queue_full" and response.json()["queue_depth"] == 101
    assert recorder.calls == []
    recorder.depth = 100
    assert client.post("/v1/deliveries", json=article(0)).status_code == 202
    assert len(recorder.deliveries) == 1


def test_not_json_is_kept_and_reported(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    response = client.post(
        "/v1/deliveries", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "invalid_json" and len(data["delivery_ids"]) == 1
    (rejected,) = recorder.rejections
    assert rejected.code == "invalid_json" and rejected.raw == b"{not json" and rejected.source == "wire-a"
    assert client.post("/v1/deliveries", json=[]).json()["error"] == "empty_batch"
    response = client.post("/v1/deliveries", content=b"<xml/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"
    assert len(recorder.items) == 1


def test_broker_failure_is_503_and_promises_nothing(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    recorder.fail_next = 1
    response = client.post("/v1/deliveries", json=article(0))
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert response.json()["error"] == "unavailable" and recorder.calls == []


def test_healthz_and_openapi(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    client, recorder = push
    recorder.depth = 3
    with httpx.Client(base_url=str(client.base_url)) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "queue_depth": 3, "max_queue_depth": 100}
        spec = anonymous.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "/v1/deliveries" in spec["paths"]
    responses = spec["paths"]["/v1/deliveries"]["post"]["responses"]
    assert {"202", "400", "401", "413", "415", "429", "503"} <= set(responses)
    # The documented request schema accepts what the endpoint accepts, and the answer matches its schema.
    schemas = spec["components"]["schemas"]
    resolver = {"$defs": schemas}

    def check(instance: object, name: str) -> None:
        schema = orjson.loads(orjson.dumps(schemas[name]).replace(b"#/components/schemas/", b"#/$defs/"))
        jsonschema.validate(
            instance,
            {**schema, **orjson.loads(orjson.dumps(resolver).replace(b"#/components/schemas/", b"#/$defs/"))},
        )

    check(article(0), "Delivery")
    with pytest.raises(jsonschema.ValidationError):
        check({"id": "x"}, "Delivery")
    check(client.post("/v1/deliveries", json=[article(0), {"id": 1}]).json(), "Accepted")


def test_tokens_from_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# senders\nwire-b: tok-b\nbare-token\n\n", encoding="utf-8")
    config = PushSource(name="push", tokens={"wire-a": "tok-a"}, tokens_file=path)  # type: ignore[dict-item]
    assert load_tokens(config) == {"tok-a": "wire-a", "tok-b": "wire-b", "bare-token": "push"}


def test_compressed_bodies_and_compressed_bombs(push: tuple[httpx.Client, RecordingPublisher]) -> None:
    import gzip

    client, recorder = push
    body = gzip.compress(orjson.dumps([article(0), article(1)]))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = client.post("/v1/deliveries", content=body, headers=headers)
    assert response.status_code == 202 and response.json()["accepted"] == 2
    assert [d.id for d in recorder.deliveries] == [ARTICLES[0]["id"], ARTICLES[1]["id"]]
    bomb = gzip.compress(b'{"id": "b", "body": "' + b" " * 20_000_000 + b'"}')
    assert len(bomb) < 64 * 1024
    response = client.post("/v1/deliveries", content=bomb, headers=headers)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    response = client.post("/v1/deliveries", content=b"\x1f\x8bnot gzip", headers=headers)
    assert response.status_code == 400 and response.json()["error"] == "bad_encoding"
    response = client.post("/v1/deliveries", content=body, headers={**headers, "Content-Encoding": "br"})
    assert response.status_code == 415 and response.json()["error"] == "unsupported_encoding"
    assert len(recorder.items) == 2
