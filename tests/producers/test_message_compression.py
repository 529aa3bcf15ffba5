"""Queue messages: UTF-8 JSON, zlib-compressed at ZLIB_LEVEL, readable by any zlib decoder."""

from __future__ import annotations

import base64
import uuid
import zlib

import orjson
import redis
from pydantic import SecretStr

from akhbar.settings import Settings
from worker.app import ZLIB_LEVEL
from worker.messages import Delivery, IngestBatch


def test_batch_body_is_zlib_at_the_configured_level(redis_url: str, redis_prefix: str) -> None:
    from producers.publish import Publisher

    run = uuid.uuid4().hex[:8]
    settings = Settings(database_url="sqlite://", redis_url=SecretStr(redis_url),
                        redis_prefix=f"{redis_prefix}-{run}", queue_bulk=f"bulk-{run}", publish_ledger=False,
                        batch_size=10)
    publisher = Publisher(settings)
    body = "\n".join(f"قال المتحدث باسم الوزارة إن الاجتماع رقم {i} سيعقد في الرياض الأسبوع المقبل."
                     for i in range(40))
    items = [Delivery(id=f"c{i}", source="wire", title="خبر", body=f"{body}\n{i}") for i in range(10)]
    client = redis.Redis.from_url(redis_url)
    key = f"{settings.redis_prefix}:{settings.queue_bulk}"
    try:
        publisher.publish(items)
        (raw,) = client.lrange(key, 0, -1)
    finally:
        client.delete(key)
        publisher.close()
    envelope = orjson.loads(raw)
    assert envelope["headers"]["compression"] == "application/x-gzip"
    assert envelope["content-type"] == "application/json"
    compressed = base64.b64decode(envelope["body"])
    plain = zlib.decompress(compressed)
    assert compressed == zlib.compress(plain, ZLIB_LEVEL)
    kwargs = orjson.loads(plain)[1]
    batch = IngestBatch.model_validate(kwargs)
    # The deliveries are serialized once (ledger and message share it): the document is exactly
    # what pydantic's own dump of the batch gives.
    assert kwargs == batch.model_dump(mode="json", exclude_defaults=True) | {"v": 1}
    first = batch.deliveries[0].delivery_id
    assert envelope["headers"]["kwargsrepr"].startswith(f"{{'deliveries': <10: {first}")
    assert [d.record.id for d in batch.deliveries if d.record] == [f"c{i}" for i in range(10)]
    assert "الرياض" in plain.decode("utf-8")  # UTF-8, no \\u escapes
