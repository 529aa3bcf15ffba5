"""Bytes per story on the Redis queue: Celery's defaults against akhbar's serializer and compression.

    uv run python -m bench.message_size [--articles 500]

Publishes the same corpus articles twice to a private Redis prefix (once as Celery's default JSON
message, once as akhbar's micro-batched UTF-8 JSON + zstd message), reads back the bytes Redis holds
for each queue entry, prints bytes per story and the ratio, and deletes its keys.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import uuid
from pathlib import Path

import redis
from celery import Celery

from akhbar.settings import Settings
from producers.publish import Publisher
from producers.records import build_delivery

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "articles.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=500)
    parser.add_argument("--redis", default=os.environ.get("AKHBAR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    items, body_bytes = [], 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            fields = {"id": row["id"], "title": row["title"], "body": row["body"], "source": "bench",
                      "url": row["url"]}
            items.append(build_delivery(fields, default_source="bench", raw=b""))
            body_bytes += len(row["body"].encode()) + len((row["title"] or "").encode())
            if len(items) >= args.articles:
                break
    client = redis.Redis.from_url(args.redis)
    prefix = f"akhbar-bench-msg-{uuid.uuid4().hex[:8]}"
    try:
        # Celery's defaults: JSON with ASCII escapes, base64 body, one message per story.
        naive = Celery("naive", broker=args.redis, set_as_current=False)
        naive.conf.broker_transport_options = {"global_keyprefix": f"{prefix}-naive:"}
        for item in items:
            naive.send_task("naive.ingest", kwargs=item.model_dump(mode="json"), queue="naive")
        naive_bytes = sum(len(m) for m in client.lrange(f"{prefix}-naive:naive", 0, -1))
        # akhbar: UTF-8 JSON, zstd, micro-batches of batch_size.
        settings = Settings(redis_url=args.redis, redis_prefix=f"{prefix}-akhbar", publish_ledger=False)
        publisher = Publisher(settings)
        publisher.publish(items)
        ours_bytes = sum(len(m) for m in client.lrange(f"{prefix}-akhbar:{settings.queue_bulk}", 0, -1))
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    n = len(items)
    print(f"{n} stories, {body_bytes / n:,.0f} bytes of UTF-8 title+body per story on average")
    print(f"Celery defaults (one message per story): {naive_bytes / n:,.0f} bytes per story in Redis")
    print(f"akhbar (batches of {settings.batch_size}, UTF-8 JSON + zstd): "
          f"{ours_bytes / n:,.0f} bytes per story")
    print(f"ratio: {naive_bytes / ours_bytes:.1f}x smaller")


if __name__ == "__main__":
    main()
