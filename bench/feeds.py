"""Producer costs: feed documents, wire files and the push endpoint, against plain baselines.

Run: ``uv run python -m bench.feeds [--articles 600] [--rounds 3]``

Feeds: corpus articles as RSS and Atom documents of 20 items. The full path (defusedxml screen,
feedparser, HTML to text, the input contract) is timed against feedparser alone on the same
documents, in the same process, best of ``--rounds``; the ratio is what safety and text
extraction cost on top of parsing. Wire: NewsML-G2 and NITF files built from the same articles.
Push: batches of 50 records POSTed to the endpoint served by uvicorn on 127.0.0.1 with a
publisher that only counts, against the same records through ``parse_json_record`` directly: the
ratio is the HTTP overhead per delivery.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import feedparser
import httpx
import orjson
import structlog

from akhbar.settings import Settings
from producers.config import PushSource
from producers.formats import parse_bytes
from producers.formats.rss import read_feed
from producers.http import PushServer, create_app
from producers.records import parse_json_record
from worker.messages import Delivery, Rejection

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "articles.jsonl.gz"


def load(count: int) -> list[dict[str, Any]]:
    """``count`` articles with a title and a body, spread over the corpus."""
    with gzip.open(CORPUS, "rb") as fh:
        rows = [orjson.loads(line) for line in fh]
    rows = [r for r in rows if r.get("title") and r.get("body")]
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def _x(text: str) -> str:
    return escape("".join(ch for ch in text if ch >= " " or ch in "\n\t"))


def rss(arts: list[dict[str, Any]]) -> bytes:
    items = "".join(
        f"<item><title>{_x(a['title'])}</title><link>https://news.example/{_x(a['id'])}</link>"
        f"<guid>https://news.example/{_x(a['id'])}</guid><description>"
        f"{_x(''.join(f'<p>{_x(p)}</p>' for p in a['body'].split(chr(10)) if p.strip()))}</description>"
        "<pubDate>Wed, 22 Jul 2015 06:00:00 GMT</pubDate></item>"
        for a in arts
    )
    head = '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    return f"{head}{items}</channel></rss>".encode()


def newsml(a: dict[str, Any], n: int) -> bytes:
    paras = "".join(f"<p>{_x(p)}</p>" for p in a["body"].split("\n") if p.strip())
    return (
        f'<newsItem xmlns="http://iptc.org/std/nar/2006-10-01/" guid="urn:bench:{n}" version="1">'
        '<itemMeta><versionCreated>2015-07-22T06:00:00Z</versionCreated><pubStatus qcode="stat:usable"/>'
        f'</itemMeta><contentMeta><headline>{_x(a["title"])}</headline><language tag="ar"/></contentMeta>'
        f'<contentSet><inlineXML contenttype="application/xhtml+xml"><html xmlns="http://www.w3.org/1999/xhtml">'
        f"<body>{paras}</body></html></inlineXML></contentSet></newsItem>"
    ).encode()


def nitf(a: dict[str, Any], n: int) -> bytes:
    paras = "".join(f"<p>{_x(p)}</p>" for p in a["body"].split("\n") if p.strip())
    return (
        f'<nitf baselang="ar"><head><docdata management-status="usable"><du-key key="bench-{n}" version="1"/>'
        '<date.issue norm="20150722T060000Z"/></docdata></head><body><body.head><hedline>'
        f"<hl1>{_x(a['title'])}</hl1></hedline></body.head><body.content>{paras}</body.content></body></nitf>"
    ).encode()


def best(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    def publish(self, items: Any, *, live: bool = False, run_id: str | None = None) -> list[str]:
        batch = list(items)
        self.count += len(batch)
        return [str(i) for i in range(len(batch))]

    def queue_depth(self) -> int:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # One log line per request would measure the terminal, not the endpoint.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arts = load(args.articles)
    n = len(arts)
    print(f"python {platform.python_version()}, feedparser {feedparser.__version__}, {n} corpus articles")

    docs = [rss(arts[i : i + 20]) for i in range(0, n, 20)]
    total_bytes = sum(map(len, docs))

    def full() -> None:
        for doc in docs:
            entries = read_feed(doc, source="bench").entries
            assert all(isinstance(e, Delivery) for e in entries)

    def baseline() -> None:
        for doc in docs:
            feedparser.parse(io.BytesIO(doc), sanitize_html=False)

    t_full, t_base = best(full, args.rounds), best(baseline, args.rounds)
    print(f"rss: {len(docs)} documents, {total_bytes / 1e6:.1f} MB, {n} items")
    print(f"  feedparser alone   {n / t_base:8.0f} items/s")
    print(f"  full feed path     {n / t_full:8.0f} items/s  ({t_full / t_base:.2f}x feedparser alone)")

    for name, build in (("newsml", newsml), ("nitf", nitf)):
        files = [build(a, i) for i, a in enumerate(arts)]

        def parse_all(files: list[bytes] = files, fmt: str = name) -> None:
            for raw in files:
                (item,) = parse_bytes(
                    raw, name="x.xml", format=fmt, source="bench", max_bytes=1 << 22, max_depth=32
                )
                assert isinstance(item, Delivery), item

        t = best(parse_all, args.rounds)
        print(f"{name}: {n / t:8.0f} files/s ({sum(map(len, files)) / n / 1024:.1f} KiB each)")

    records = [orjson.dumps({"id": a["id"], "title": a["title"], "body": a["body"]}) for a in arts]
    batches = [b"[" + b",".join(records[i : i + 50]) + b"]" for i in range(0, n, 50)]

    def direct() -> None:
        for rec in records:
            result = parse_json_record(rec, default_source="bench", max_bytes=1 << 22, max_depth=32)
            assert not isinstance(result, Rejection)

    publisher = CountingPublisher()
    server = PushServer(
        create_app(
            publisher,
            PushSource(name="push", tokens={"b": "t"}),  # type: ignore[dict-item]
            settings=Settings(),
        ),
        host="127.0.0.1",
        port=0,
    ).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer t"}) as client:

            def pushed() -> None:
                for body in batches:
                    response = client.post(
                        "/v1/deliveries", content=body, headers={"Content-Type": "application/json"}
                    )
                    assert response.status_code == 202

            t_push = best(pushed, args.rounds)
    finally:
        server.stop()
    t_direct = best(direct, args.rounds)
    print(f"push: {len(batches)} requests of 50 records")
    print(f"  parse_json_record  {n / t_direct:8.0f} deliveries/s")
    print(
        f"  POST /v1/deliveries {n / t_push:7.0f} deliveries/s  ({t_push / t_direct:.2f}x direct), "
        f"{len(batches) / t_push:.0f} requests/s"
    )


if __name__ == "__main__":
    main()
