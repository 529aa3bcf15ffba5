"""RSS/Atom polling against a real local HTTP server: conditional GET, new items only, failure
modes (HTTP errors, timeouts, malformed and hostile XML, a gzip bomb), backoff, disable, quiet."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from feedtools import FeedServer, RecordingPublisher, Route, build_atom, build_rss, corpus_articles, guid_of
from structlog.testing import capture_logs

from producers.config import FeedSource, MemoryHealth
from producers.feeds import FeedPoller
from producers.formats.rss import entry_key

ARTICLES = corpus_articles(30)
_OPEN: list[FeedPoller] = []


@pytest.fixture(autouse=True)
def _close_pollers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def poller(
    server: FeedServer,
    publisher: RecordingPublisher,
    path: str = "/rss.xml",
    *,
    health: MemoryHealth | None = None,
    clock: list[datetime] | None = None,
    **kw: object,
) -> FeedPoller:
    config = FeedSource(name="feed-a", url=server.url(path), interval=60, timeout=kw.pop("timeout", 5), **kw)  # type: ignore[arg-type]
    feed = FeedPoller(config, publisher, health=health, clock=(lambda: clock[0]) if clock else None)
    _OPEN.append(feed)
    return feed


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.split("\n") if p.strip()]


def test_rss_items_published_once_with_conditional_get(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:10]), gzip=True)
    feed = poller(feed_server, recorder)
    with capture_logs() as logs:
        first = feed.poll()
    assert first.outcome == "published" and first.published == 10 and len(first.delivery_ids) == 10
    got = recorder.deliveries
    assert [d.id for d in got] == [guid_of(a) for a in ARTICLES[:10]]
    assert all(d.source == "feed-a" and d.format == "rss" and d.language == "ar" for d in got)
    assert all(live for _, live in recorder.calls)
    for delivery, article in zip(got, ARTICLES, strict=False):
        assert delivery.title == article["title"].strip()
        assert paragraphs(delivery.body) == paragraphs(article["body"])
        assert "<p>" not in delivery.body
    polled = [e for e in logs if e["event"] == "feed_polled"]
    assert polled[0]["source"] == "feed-a" and polled[0]["published"] == 10

    # Unchanged feed: the server answers 304 to the ETag and nothing is published.
    assert feed.poll().outcome == "not_modified"
    assert feed_server.hits("/rss.xml")[-1]["If-None-Match"] == feed.status.etag
    assert len(recorder.deliveries) == 10

    # The feed moves on: five new items, five old ones; only the new are published.
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[5:15]))
    third = feed.poll()
    assert (third.outcome, third.published, third.skipped) == ("published", 5, 5)
    assert [d.id for d in recorder.deliveries[10:]] == [guid_of(a) for a in ARTICLES[10:15]]
    assert feed.status.items == 15 and feed.status.state == "active" and feed.status.failure_score == 0


def test_atom_feed(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    feed_server.routes["/atom.xml"] = Route(build_atom(ARTICLES[:4]), content_type="application/atom+xml")
    result = poller(feed_server, recorder, "/atom.xml").poll()
    assert result.published == 4
    first = recorder.deliveries[0]
    assert first.format == "atom" and first.id == guid_of(ARTICLES[0]) and first.language == "ar"
    assert first.url == guid_of(ARTICLES[0]) and first.published_at == datetime(2015, 7, 22, 6, tzinfo=UTC)
    assert paragraphs(first.body) == paragraphs(ARTICLES[0]["body"])


def test_feed_without_guids_gets_stable_derived_ids(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:3], guids=False), etag=False)
    feed = poller(feed_server, recorder)
    feed.poll()
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:4], guids=False), etag=False)
    second = feed.poll()
    assert (second.published, second.skipped) == (1, 3)
    ids = [d.id for d in recorder.deliveries]
    assert ids == [entry_key(guid_of(a), a["title"]) for a in ARTICLES[:4]]


def test_restart_remembers_etag_and_seen_items(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    health = MemoryHealth()
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:5]))
    poller(feed_server, recorder, health=health).poll()
    restarted = poller(feed_server, recorder, health=health)
    assert restarted.poll().outcome == "not_modified"
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:6]))
    assert restarted.poll().published == 1
    assert len(recorder.deliveries) == 6


def test_failed_publish_keeps_the_old_etag_so_nothing_is_lost(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:5]))
    feed = poller(feed_server, recorder)
    recorder.fail_next = 1
    failed = feed.poll()
    assert failed.outcome == "failed" and failed.error == "publish_failed"
    assert feed.status.etag is None and feed.status.failure_score == 0.5
    retried = feed.poll()
    assert retried.published == 5 and "If-None-Match" not in feed_server.hits("/rss.xml")[-1]
    assert len(recorder.deliveries) == 5


def bomb(size: int) -> bytes:
    head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>'
    return gzip.compress(head + b"A" * size + b"</title></channel></rss>", compresslevel=9)


@pytest.mark.parametrize(
    ("route", "code", "hard"),
    [
        (Route(b"oops", status=500), "http_500", False),
        (Route(b"slow down", status=429, headers={"Retry-After": "7200"}), "http_429", False),
        (Route(b"gone", status=410), "http_410", True),
        (Route(b"\x89PNG\r\n\x1a\n binary, not a feed"), "invalid_feed", True),
        (
            Route(
                b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<rss version="2.0"><channel><item><title>&x;</title><description>&x;</description>'
                b"</item></channel></rss>"
            ),
            "unsafe_xml",
            True,
        ),
        (
            Route(
                b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                b"<rss version='2.0'><channel><item><title>&b;</title><description>&b;</description>"
                b"</item></channel><broken>"
            ),
            "unsafe_xml",
            True,
        ),
        (Route(raw_gzip=bomb(8 * 1024 * 1024)), "too_large", True),
        (Route(b"x" * 3 * 1024 * 1024), "too_large", True),
    ],
)
def test_failure_modes(
    feed_server: FeedServer, recorder: RecordingPublisher, route: Route, code: str, hard: bool
) -> None:
    feed_server.routes["/rss.xml"] = route
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    feed = poller(feed_server, recorder, clock=now, max_bytes=1024 * 1024)
    with capture_logs() as logs:
        result = feed.poll()
    assert result.outcome == "failed" and result.error == code
    assert recorder.items == []
    assert feed.status.failure_score == (1.0 if hard else 0.5)
    assert feed.status.failures == 1 and (feed.status.last_error or "").startswith(code)
    (event,) = [e for e in logs if e["event"] == "feed_poll_failed"]
    assert event["code"] == code and event["hard"] is hard and event["source"] == "feed-a"
    # Backoff: the next poll is at least twice the interval away (and Retry-After is honoured).
    assert feed.status.next_poll is not None
    assert feed.status.next_poll - now[0] >= timedelta(seconds=7200 if code == "http_429" else 120)
    assert not feed.due(now[0] + timedelta(seconds=61))


def test_timeout_is_a_soft_failure(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:2]), delay=1.5)
    result = poller(feed_server, recorder, timeout=0.3).poll()
    assert result.error == "timeout" and recorder.items == []


def test_connection_refused_is_a_soft_failure(recorder: RecordingPublisher) -> None:
    server = FeedServer()
    port = server.port
    server.httpd.server_close()  # bound, never served, now closed: the port refuses connections
    config = FeedSource(name="feed-a", url=f"http://127.0.0.1:{port}/rss.xml", interval=60, timeout=2)
    feed = FeedPoller(config, recorder)
    _OPEN.append(feed)
    result = feed.poll()
    assert result.error == "connection_error"


def test_malformed_but_recoverable_feed_is_read(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    broken = build_rss(ARTICLES[:3]).replace(b"</channel></rss>", b"<item><title>A & B</title></channel>")
    feed_server.routes["/rss.xml"] = Route(broken)
    with capture_logs() as logs:
        result = poller(feed_server, recorder).poll()
    assert result.published == 3 and result.rejected == 1  # the stray item has no body: kept as rejected
    assert any(e["event"] == "feed_malformed_recovered" for e in logs)


def test_repeated_hard_failures_disable_the_feed(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(b"missing", status=404)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    feed = poller(feed_server, recorder, clock=now, disable_after=3)
    with capture_logs() as logs:
        for _ in range(3):
            assert feed.poll().outcome == "failed"
            now[0] += timedelta(days=1)
    assert feed.status.state == "disabled" and feed.status.next_poll is None
    assert not feed.due(now[0] + timedelta(days=30))
    assert feed.poll().outcome == "disabled" and len(feed_server.hits("/rss.xml")) == 3
    assert [e["event"] for e in logs].count("feed_disabled") == 1


def test_good_polls_heal_the_failure_score(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    feed_server.routes["/rss.xml"] = Route(b"", status=503)
    feed = poller(feed_server, recorder)
    feed.poll()
    feed.poll()
    assert feed.status.failure_score == 1.0 and feed.status.consecutive_failures == 2
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:1]))
    feed.poll()
    assert feed.status.failure_score == 0.5 and feed.status.consecutive_failures == 0
    assert feed.status.last_error is None


def test_feed_that_stops_giving_news_goes_quiet_then_wakes(
    feed_server: FeedServer, recorder: RecordingPublisher
) -> None:
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:2]), etag=False)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    feed = poller(feed_server, recorder, clock=now, quiet_after=3600)
    feed.poll()
    now[0] += timedelta(minutes=30)
    feed.poll()
    assert feed.status.state == "active"
    now[0] += timedelta(minutes=31)
    with capture_logs() as logs:
        feed.poll()
    assert feed.status.state == "quiet" and [e["event"] for e in logs].count("feed_quiet") == 1
    assert feed.due(now[0] + timedelta(seconds=70))  # a quiet feed is still polled
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:3]), etag=False)
    now[0] += timedelta(minutes=5)
    feed.poll()
    assert feed.status.state == "active" and feed.status.last_seen == now[0]


def test_last_modified_without_etag(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    stamp = "Wed, 22 Jul 2015 06:00:00 GMT"
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:2]), etag=False, last_modified=stamp)
    feed = poller(feed_server, recorder)
    assert feed.poll().published == 2 and feed.status.last_modified == stamp and feed.status.etag is None
    assert feed.poll().outcome == "not_modified"
    assert feed_server.hits("/rss.xml")[-1]["If-Modified-Since"] == stamp


def test_redirects_are_followed_and_remembered(feed_server: FeedServer, recorder: RecordingPublisher) -> None:
    feed_server.routes["/old.xml"] = Route(b"", status=301, headers={"Location": "/rss.xml"})
    feed_server.routes["/rss.xml"] = Route(build_rss(ARTICLES[:2]))
    feed = poller(feed_server, recorder, "/old.xml")
    assert feed.poll().published == 2
    assert feed.status.cursor["redirected_to"] == feed_server.url("/rss.xml")
    feed_server.routes["/loop.xml"] = Route(b"", status=302, headers={"Location": "/loop.xml"})
    looping = poller(feed_server, recorder, "/loop.xml")
    assert looping.poll().error == "too_many_redirects" and looping.status.failure_score == 1.0
