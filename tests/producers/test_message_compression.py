"""Queue messages: UTF-8 JSON in one zstd frame (with its content size), readable by any zstd
decoder; zlib bodies of the format before are still decoded, as are zstd frames written without a
content size."""

from __future__ import annotations

import base64
import uuid
import zlib

import orjson
import pytest
import redis
import zstandard
from kombu import compression
from pydantic import SecretStr

from akhbar import zstd
from akhbar.settings import Settings
from worker.messages import Delivery, IngestBatch


def test_batch_body_is_one_zstd_frame_at_the_configured_level(redis_url: str, redis_prefix: str) -> None:
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
    assert envelope["headers"]["compression"] == "application/zstd"
    assert envelope["content-type"] == "application/json"
    compressed = base64.b64decode(envelope["body"])
    # Decoded by python-zstandard directly, not through akhbar's code: the frame records its size.
    assert zstandard.get_frame_parameters(compressed).content_size > 0
    plain = zstandard.ZstdDecompressor().decompress(compressed)
    assert compressed == zstandard.ZstdCompressor(level=zstd.LEVEL).compress(plain)
    kwargs = orjson.loads(plain)[1]
    batch = IngestBatch.model_validate(kwargs)
    # The deliveries are serialized once (ledger and message share it): the document is exactly
    # what pydantic's own dump of the batch gives.
    assert kwargs == batch.model_dump(mode="json", exclude_defaults=True) | {"v": 1}
    first = batch.deliveries[0].delivery_id
    assert envelope["headers"]["kwargsrepr"].startswith(f"{{'deliveries': <10: {first}")
    assert [d.record.id for d in batch.deliveries if d.record] == [f"c{i}" for i in range(10)]
    assert "الرياض" in plain.decode("utf-8")  # UTF-8, no \\u escapes


@pytest.mark.parametrize("encode", ["zlib", "zstd streamed"])
def test_bodies_of_the_format_before_and_streamed_frames_are_decoded(encode: str) -> None:
    import worker.app  # noqa: F401  (registers the codecs)

    delivery = {"delivery_id": "x", "body": "قال المتحدث " * 200}
    body = orjson.dumps([[], {"deliveries": [delivery], "v": 1}, {}])
    if encode == "zlib":
        # An older producer's body: zlib at level 4.
        content_type, data = "application/x-gzip", zlib.compress(body, 4)
    else:
        content_type = "application/zstd"
        cobj = zstandard.ZstdCompressor(level=3).compressobj()  # no content size in the header
        data = cobj.compress(body) + cobj.flush()
        assert zstandard.get_frame_parameters(data).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert compression.decompress(data, content_type) == body


def test_compression_contexts_are_per_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [(f"خبر رقم {i} " * 300).encode() for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        frames = list(pool.map(zstd.compress, texts))
        back = list(pool.map(zstd.decompress, frames))
    assert back == texts
    assert frames == [zstandard.ZstdCompressor(level=zstd.LEVEL).compress(t) for t in texts]
