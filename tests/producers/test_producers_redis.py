"""Producers through the real publisher to the real Redis: the messages read back are the deliveries."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
from feedtools import FeedServer, Route, build_rss, corpus_articles, guid_of
from kombu import Exchange, Queue

from akhbar.settings import Settings
from producers.config import DropFolderSource, FeedSource, PushSource
from producers.dropfolder import DropFolder
from producers.feeds import FeedPoller
from producers.http import PushServer, create_app
from worker.messages import IngestBatch

DATA = Path(__file__).parent / "data"


def read_back(settings: Settings, queue: str, publisher: object) -> list[IngestBatch]:
    """Every message waiting on ``queue``, consumed and decoded as a worker would."""
    app = publisher.app  # type: ignore[attr-defined]
    batches = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(Queue(queue, Exchange("akhbar", type="direct"), routing_key=queue))
        while True:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                break
            _args, kwargs, _embed = message.decode()
            batches.append(IngestBatch.model_validate(kwargs))
            message.ack()
        simple.close()
    return batches


def test_feed_drop_folder_and_push_publish_to_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str, feed_server: FeedServer
) -> None:
    from models.session import upgrade
    from producers.publish import Publisher

    run = uuid.uuid4().hex[:8]
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(database_url)  # the publisher records what it publishes in the database's ledger
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"{redis_prefix}-{run}",
        batch_size=2,
        queue_live=f"live-{run}",
        queue_bulk=f"bulk-{run}",
    )
    publisher = Publisher(settings)
    articles = corpus_articles(3)
    try:
        feed_server.routes["/rss.xml"] = Route(build_rss(articles))
        feed = FeedPoller(FeedSource(name="rss-redis", url=feed_server.url("/rss.xml")), publisher)
        assert feed.poll().published == 3
        feed.close()

        folder = DropFolder(
            DropFolderSource(name="drop-redis", path=tmp_path / "drop", live=False, settle=0),
            publisher,
            settings=settings,
        )
        shutil.copy(DATA / "nitf_v1.xml", folder.path / "a.xml")
        shutil.copy(DATA / "xxe.xml", folder.path / "b.xml")
        folder.scan()
        report = folder.scan()
        assert (report.published, report.failed) == (["a.xml"], ["b.xml"])
        assert sorted(p.name for p in folder.processed_dir.iterdir()) == ["a.xml"]

        server = PushServer(
            create_app(
                publisher,
                PushSource(name="push", tokens={"w": "t"}),  # type: ignore[dict-item]
                settings=settings,
            ),
            host="127.0.0.1",
            port=0,
        ).start()
        try:
            response = httpx.post(
                f"{server.url}/v1/deliveries",
                headers={"Authorization": "Bearer t"},
                json=[{"id": "p1", "body": "نص"}, {"id": "p2"}],
                timeout=10,
            )
            assert response.status_code == 202
            push_ids = response.json()["delivery_ids"]
        finally:
            server.stop()

        assert publisher.queue_depth() > 0
        live = [m for b in read_back(settings, settings.queue_live, publisher) for m in b.deliveries]
        bulk = [m for b in read_back(settings, settings.queue_bulk, publisher) for m in b.deliveries]
    finally:
        publisher.close()

    assert [m.record.id for m in live if m.record and m.record.source == "rss-redis"] == [
        guid_of(a) for a in articles
    ]
    pushed = [m for m in live if m.delivery_id in push_ids]
    assert [(m.record.id if m.record else m.rejected.code) for m in pushed] == ["p1", "missing_body"]  # type: ignore[union-attr]
    assert {m.record.source if m.record else m.rejected.source for m in bulk} == {"drop-redis"}  # type: ignore[union-attr]
    nitf = [m.record for m in bulk if m.record]
    assert [r.id for r in nitf] == ["baghouz-families-20190212:1"] and nitf[0].extra["pub_status"] == "usable"
    (refused,) = [m.rejected for m in bulk if m.rejected]
    assert refused.code == "unsafe_xml" and refused.raw == (DATA / "xxe.xml").read_bytes()
