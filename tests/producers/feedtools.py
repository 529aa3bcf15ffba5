"""Test tools for producers: a recording publisher and a real local feed server.

The feed server is a threading ``http.server`` on 127.0.0.1 (random port) that serves RSS and
Atom built from corpus articles, with ETag / Last-Modified support, gzip, and failure modes (HTTP
errors, slow answers, malformed XML, hostile XML, decompression bombs). Run it on its own to feed
a local ``akhbar produce --config sources.toml``:

    uv run python tests/producers/feedtools.py --port 8765
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from worker.messages import Delivery, Rejection, new_delivery_id

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "articles.jsonl.gz"
# Characters XML 1.0 cannot hold (the corpus keeps real control characters).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def corpus_articles(limit: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """Articles ``offset .. offset+limit`` of the shared corpus that have a title and a body."""
    if not CORPUS.exists():
        raise FileNotFoundError(f"the development corpus is missing: expected {CORPUS}")
    rows: list[dict[str, Any]] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if n < offset:
                continue
            row = json.loads(line)
            if row.get("title") and row.get("body") and len(row["body"]) > 80:
                rows.append(row)
                if len(rows) >= limit:
                    break
    return rows


class RecordingPublisher:
    """Records what sources publish, for producer-side behaviour only (what got published, file
    moves); the real :class:`producers.publish.Publisher` is tested against Redis separately.

    ``fail_next`` makes the next N publish calls raise, as a broker outage would; ``depth`` is what
    :meth:`queue_depth` reports.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[Delivery | Rejection], bool]] = []
        self.fail_next = 0
        self.depth = 0
        self.lock = threading.Lock()

    def publish(
        self, items: Iterable[Delivery | Rejection], *, live: bool = False, run_id: str | None = None
    ) -> list[str]:
        batch = list(items)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise ConnectionError("broker unavailable")
            self.calls.append((batch, live))
        return [new_delivery_id() for _ in batch]

    def queue_depth(self) -> int:
        return self.depth

    @property
    def items(self) -> list[Delivery | Rejection]:
        with self.lock:
            return [item for batch, _ in self.calls for item in batch]

    @property
    def deliveries(self) -> list[Delivery]:
        return [i for i in self.items if isinstance(i, Delivery)]

    @property
    def rejections(self) -> list[Rejection]:
        return [i for i in self.items if isinstance(i, Rejection)]


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _html_body(body: str) -> str:
    return "".join(f"<p>{escape(_clean(p.strip()))}</p>" for p in body.split("\n") if p.strip())


def _when(n: int) -> datetime:
    return datetime(2015, 7, 22, 6, 0, tzinfo=UTC) + timedelta(minutes=7 * n)


def guid_of(article: dict[str, Any]) -> str:
    return "https://news.example/" + article["id"]


def build_rss(articles: list[dict[str, Any]], *, guids: bool = True, title: str = "أخبار") -> bytes:
    """An RSS 2.0 document: one item per article, the body as escaped HTML in ``description``."""
    items = []
    for n, art in enumerate(articles):
        guid = f'<guid isPermaLink="true">{escape(guid_of(art))}</guid>' if guids else ""
        items.append(
            f"<item><title>{escape(_clean(art['title']))}</title><link>{escape(guid_of(art))}</link>{guid}"
            f"<description>{escape(_html_body(art['body']))}</description>"
            f"<pubDate>{format_datetime(_when(n))}</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>https://news.example/</link><language>ar</language>"
        f"<description>test feed</description>{''.join(items)}</channel></rss>"
    ).encode()


def build_atom(articles: list[dict[str, Any]], *, title: str = "أخبار") -> bytes:
    """An Atom 1.0 document: one entry per article, the body as ``content type="html"``."""
    entries = []
    for n, art in enumerate(articles):
        entries.append(
            f"<entry><id>{escape(guid_of(art))}</id><title>{escape(_clean(art['title']))}</title>"
            f'<link href="{escape(guid_of(art))}"/><updated>{_when(n).isoformat()}</updated>'
            f'<content type="html">{escape(_html_body(art["body"]))}</content></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        f'xml:lang="ar"><title>{escape(title)}</title><id>urn:test:atom</id>'
        f"<updated>{_when(len(articles)).isoformat()}</updated>{''.join(entries)}</feed>"
    ).encode()


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: bool = True  # answer If-None-Match with 304
    last_modified: str | None = None  # sent, and If-Modified-Since equal to it answered with 304
    gzip: bool = False  # gzip the body when the client accepts it
    raw_gzip: bytes | None = None  # a pre-compressed body sent as Content-Encoding: gzip
    delay: float = 0.0


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 with per-path :class:`Route` answers; records requests."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path)
                if route is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                    return
                if route.delay:
                    time.sleep(route.delay)
                headers = {"Content-Type": route.content_type, **route.headers}
                if route.status != 200:
                    self._send(route.status, route.body, headers)
                    return
                tag = '"' + hashlib.sha1(route.body).hexdigest() + '"'
                if route.etag:
                    headers["ETag"] = tag
                    if self.headers.get("If-None-Match") == tag:
                        self._send(304, b"", {"ETag": tag})
                        return
                if route.last_modified is not None:
                    headers["Last-Modified"] = route.last_modified
                    if self.headers.get("If-Modified-Since") == route.last_modified:
                        self._send(304, b"", {"Last-Modified": route.last_modified})
                        return
                body = route.body
                if route.raw_gzip is not None:
                    body, headers["Content-Encoding"] = route.raw_gzip, "gzip"
                elif route.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
                self._send(200, body, headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gave up (timeout tests) is expected here, not a test failure.
                pass

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="feed-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]


def main() -> None:
    """Serve /rss.xml and /atom.xml from the corpus, with a few new articles every ``--every`` seconds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--every", type=float, default=60.0)
    args = parser.parse_args()
    server = FeedServer(args.port).start()
    pool = corpus_articles(500)
    step = 0
    try:
        while True:
            window = pool[(step * 5) % 400 : (step * 5) % 400 + 20]
            server.routes["/rss.xml"] = Route(build_rss(window[:10]))
            server.routes["/atom.xml"] = Route(build_atom(window[10:]), content_type="application/atom+xml")
            print(f"serving {server.url('/rss.xml')} and {server.url('/atom.xml')} (step {step})", flush=True)
            step += 1
            time.sleep(args.every)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
