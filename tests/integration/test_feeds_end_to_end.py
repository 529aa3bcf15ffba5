"""Long-running producers to stored stories: a feed, a drop folder and the push endpoint, through the
real publisher, Redis and two celery worker processes, checked in the database."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from akhbar.settings import Settings
from models import Delivery
from models.session import session_factory
from producers.config import load_config
from producers.publish import Publisher
from producers.runner import DatabaseHealth, Runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "producers"))
from feedtools import FeedServer, Route, build_rss, corpus_articles, guid_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "producers" / "data"


def _stored(url: str) -> dict[str, list[tuple[str, str]]]:
    with session_factory(url)() as session:
        rows = session.execute(select(Delivery.source, Delivery.source_id, Delivery.status)).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for source, source_id, status in rows:
        out.setdefault(source, []).append((source_id, status))
    return out


def test_feed_drop_folder_and_push_end_in_the_store(workers, akhbar_env, tmp_path: Path) -> None:
    articles = corpus_articles(6, offset=300)
    server = FeedServer().start()
    server.routes["/rss.xml"] = Route(build_rss(articles[:3]))
    (tmp_path / "sources.toml").write_text(f"""
[[source]]
kind = "rss"
name = "rss-e2e"
url = "{server.url('/rss.xml')}"
interval = "200ms"

[[source]]
kind = "dropfolder"
name = "drop-e2e"
path = "drop"
interval = "50ms"

[[source]]
kind = "push"
name = "push-e2e"
port = 0
tokens = {{ "push-e2e" = "tok" }}
""", encoding="utf-8")
    settings = Settings(database_url=akhbar_env["AKHBAR_DATABASE_URL"],
                        redis_url=akhbar_env["AKHBAR_REDIS_URL"],
                        redis_prefix=akhbar_env["AKHBAR_REDIS_PREFIX"])
    publisher = Publisher(settings)
    runner = Runner(load_config(tmp_path / "sources.toml"), publisher, settings=settings,
                    health=DatabaseHealth(settings.database_url)).start()
    try:
        shutil.copy(DATA / "newsml_v1.xml", tmp_path / "drop" / "story.xml")
        (tmp_path / "drop" / "bad.json").write_bytes(b'{"id": "b", "body": ')  # invalid: kept as rejected
        response = httpx.post(f"{runner.push['push-e2e'].url}/v1/deliveries",
                              headers={"Authorization": "Bearer tok"},
                              json=[{"id": "p1", "body": articles[5]["body"], "title": articles[5]["title"]},
                                    {"id": "p2"}], timeout=10)
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = _stored(settings.database_url)
            if (len(stored.get("rss-e2e", [])) >= 3 and len(stored.get("push-e2e", [])) >= 2
                    and len(stored.get("drop-e2e", [])) >= 2):
                break
            time.sleep(0.5)
    finally:
        runner.stop()
        publisher.close()
        server.stop()
    stored = _stored(settings.database_url)
    assert sorted(sid for sid, _ in stored["rss-e2e"]) == sorted(guid_of(a) for a in articles[:3])
    assert {status for _, status in stored["rss-e2e"]} <= {"new", "near_duplicate", "update", "duplicate"}
    assert sorted(stored["push-e2e"]) == [("p1", "new"), ("p2", "rejected")]
    drop = dict(stored["drop-e2e"])
    assert drop.get("urn:newsml:wire.example:20190212:baghouz-families:1") == "new"
    assert "rejected" in {status for sid, status in stored["drop-e2e"]
                          if sid != "urn:newsml:wire.example:20190212:baghouz-families:1"}
    assert (tmp_path / "drop" / "processed" / "story.xml").exists()
