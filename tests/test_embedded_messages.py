"""Embedded mode's messages: in-process, so neither compressed nor base64-encoded, and still the
same deliveries; a broker's messages keep both (tests/producers/test_message_compression.py). The
garbage collector's young threshold is raised while the embedded worker runs, and restored."""

from __future__ import annotations

import gc
from pathlib import Path

import orjson
import pytest

from akhbar.settings import Settings
from worker.embedded import GC_THRESHOLD, POLLING_INTERVAL
from worker.messages import Delivery, IngestBatch


def test_embedded_messages_are_plain_json(tmp_path: Path) -> None:
    from producers.publish import Publisher
    from worker.embedded import embedded_worker

    settings = Settings(database_url=f"sqlite:///{tmp_path}/akhbar.db", publish_ledger=False, batch_size=10)
    assert settings.embedded
    publisher = Publisher(settings)
    items = [Delivery(id=f"m{i}", source="wire", title="خبر", body=f"قال المتحدث في الرياض {i}.")
             for i in range(3)]
    before = gc.get_threshold()
    # The worker consumes the live queue only, so the bulk message stays there to be read back.
    with embedded_worker(publisher.app, [settings.queue_live]):
        assert gc.get_threshold()[0] == GC_THRESHOLD
        with publisher.app.connection_for_read() as conn:
            assert conn.transport.polling_interval == POLLING_INTERVAL
        sent = publisher.publish(items)
        with publisher.app.connection_for_read() as conn:
            message = conn.default_channel.basic_get(settings.queue_bulk, no_ack=True)
    assert gc.get_threshold() == before
    assert message is not None
    assert "compression" not in message.headers
    assert message.properties.get("body_encoding") is None
    kwargs = orjson.loads(message.body)[1]
    batch = IngestBatch.model_validate(kwargs)
    assert [d.delivery_id for d in batch.deliveries] == sent
    assert [d.record.id for d in batch.deliveries if d.record] == ["m0", "m1", "m2"]
    assert "الرياض" in message.body.decode("utf-8")


def test_embedded_worker_refuses_a_broker_app() -> None:
    from pydantic import SecretStr

    from worker.app import create_app
    from worker.embedded import embedded_worker

    app = create_app(Settings(database_url="sqlite://", redis_url=SecretStr("redis://127.0.0.1:6379/15")))
    with pytest.raises(ValueError), embedded_worker(app, ["akhbar.live"]):
        pass
    assert app.conf.task_compression == "zstd"


def test_the_embedded_worker_stops_at_once(tmp_path: Path) -> None:
    # Celery's solo loop waits for messages 2 s at a time; the embedded transport ends each wait
    # after DRAIN_TIMEOUT, so a stopped worker's thread ends within a fraction of a second.
    import threading
    import time

    from producers.publish import Publisher
    from worker.embedded import DRAIN_TIMEOUT, embedded_worker

    settings = Settings(database_url=f"sqlite:///{tmp_path}/akhbar.db", publish_ledger=False)
    publisher = Publisher(settings)
    with embedded_worker(publisher.app, [settings.queue_live, settings.queue_bulk]):
        (thread,) = [t for t in threading.enumerate() if t.name == "akhbar-embedded-worker"]
        time.sleep(0.3)  # idle, waiting for messages
        stopping = time.monotonic()
    assert not thread.is_alive()
    assert time.monotonic() - stopping < 10 * DRAIN_TIMEOUT + 0.5
