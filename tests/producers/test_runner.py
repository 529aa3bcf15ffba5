"""The producer runner: all four kinds of source in one process, from a ``sources.toml``."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from feedtools import FeedServer, RecordingPublisher, Route, build_atom, build_rss, corpus_articles, guid_of

from akhbar.settings import Settings
from producers.config import MemoryHealth, load_config
from producers.runner import Runner, run

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]
ARTICLES = corpus_articles(12)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def write_config(tmp_path: Path, server: FeedServer) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        f"""
fetch_threads = 2

[[source]]
kind = "rss"
name = "rss-local"
url = "{server.url("/rss.xml")}"
interval = "200ms"

[[source]]
kind = "atom"
name = "atom-local"
url = "{server.url("/atom.xml")}"
interval = 0.2
live = false

[[source]]
kind = "dropfolder"
name = "wire-drop"
path = "drop"
interval = "50ms"

[[source]]
kind = "push"
name = "push"
port = 0
tokens = {{ "wire-push" = "tok" }}

[[source]]
kind = "rss"
name = "switched-off"
url = "http://127.0.0.1:9/never"
enabled = false
""",
        encoding="utf-8",
    )
    return path


def test_one_process_runs_every_kind_of_source(
    tmp_path: Path, feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:3]))
    feed_server.routes["/atom.xml"] = Route(build_atom(ARTICLES[3:5]), content_type="application/atom+xml")
    config = load_config(write_config(tmp_path, feed_server))
    drop = tmp_path / "drop"
    assert [s.name for s in config.sources if s.kind == "dropfolder" and s.path == drop]  # type: ignore[union-attr]
    health = MemoryHealth()
    runner = Runner(config, recorder, settings=Settings(), health=health).start()
    try:
        assert "switched-off" not in runner.feeds
        wait_for(lambda: len(recorder.deliveries) >= 5, "the feeds")
        shutil.copy(DATA / "newsml_v1.xml", drop / "story.xml")
        shutil.copy(DATA / "newsml_v3_canceled.xml", drop / "story-cancel.xml")
        push_url = runner.push["push"].url
        response = httpx.post(
            f"{push_url}/v1/deliveries",
            headers={"Authorization": "Bearer tok"},
            json={"id": "p1", "body": ARTICLES[5]["body"]},
            timeout=10,
        )
        assert response.status_code == 202
        wait_for(lambda: (drop / "processed" / "story-cancel.xml").exists(), "the drop folder")
        # The feed changes: the next polls publish the new item only.
        feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:4]))
        wait_for(
            lambda: guid_of(ARTICLES[3]) in {d.id for d in recorder.deliveries if d.source == "rss-local"},
            "the new feed item",
        )
    finally:
        runner.stop()

    by_source: dict[str, list[str]] = {}
    for delivery in recorder.deliveries:
        by_source.setdefault(delivery.source, []).append(delivery.id)
    assert sorted(by_source["rss-local"]) == sorted(guid_of(a) for a in ARTICLES[:4])
    assert sorted(by_source["atom-local"]) == sorted(guid_of(a) for a in ARTICLES[3:5])
    assert sorted(by_source["wire-drop"]) == [
        f"urn:newsml:wire.example:20190212:baghouz-families:{v}" for v in (1, 3)
    ]
    assert by_source["wire-push"] == ["p1"]
    # Live sources went to the live queue, the atom source (live = false) to the bulk one.
    lanes = {batch[0].source: live for batch, live in recorder.calls}  # type: ignore[union-attr]
    assert lanes == {"rss-local": True, "atom-local": False, "wire-drop": True, "wire-push": True}
    statuses = health.statuses
    assert statuses["rss-local"].items == 4 and statuses["rss-local"].etag
    assert statuses["wire-drop"].items == 2 and statuses["push"].items == 1
    assert not feed_server.hits("/never")


def test_run_blocks_until_stopped_and_revives_a_reenabled_feed(
    tmp_path: Path, feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(b"gone", status=410)
    (tmp_path / "sources.toml").write_text(
        f"""
[[source]]
kind = "rss"
name = "flaky"
url = "{feed_server.url("/rss.xml")}"
interval = "50ms"
max_backoff = "100ms"
disable_after = 2
""",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "sources.toml")
    health = MemoryHealth()
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(config, recorder, stop), kwargs={"health": health})
    runner = Runner(config, recorder, health=health, refresh=0.05).start()
    try:
        wait_for(lambda: runner.feeds["flaky"].status.state == "disabled", "the feed to be disabled")
        hits = len(feed_server.hits("/rss.xml"))
        assert hits == 2
        # Fixed upstream, enabled by hand (what `akhbar sources enable` writes).
        feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:2]))
        enabled = health.load("flaky")
        assert enabled is not None
        health.save(
            type(enabled)(
                **{
                    **enabled.__dict__,
                    "state": "active",
                    "failure_score": 0.0,
                    "next_poll": None,
                    "consecutive_failures": 0,
                }
            )
        )
        wait_for(lambda: len(recorder.deliveries) == 2, "the re-enabled feed")
    finally:
        runner.stop()
    thread.start()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_sample_sources_toml_holds_all_four_kinds() -> None:
    config = load_config(ROOT / "sources.toml")
    kinds = {(s.kind, getattr(s, "url", "").rsplit("/", 1)[-1]) for s in config.sources}
    assert {("feed", "rss.xml"), ("feed", "atom.xml"), ("dropfolder", ""), ("push", "")} <= kinds
    wire = next(s for s in config.sources if s.name == "wire-drop")
    assert wire.path == ROOT / "var" / "drop" / "wire"  # type: ignore[union-attr]
    push = next(s for s in config.sources if s.kind == "push")
    assert push.tokens and push.max_queue_depth > 0  # type: ignore[union-attr]
