"""RSS and Atom polling: fetch with conditional GET, parse safely, publish new items, track health.

One :class:`FeedPoller` per feed. Each :meth:`FeedPoller.poll`:

1. fetches the feed with httpx, sending ``If-None-Match`` / ``If-Modified-Since`` from the last
   good poll, with a total deadline and a cap on the *decompressed* size (a gzip bomb is cut off
   at the cap, never inflated whole);
2. parses it (:func:`producers.formats.rss.read_feed`: defusedxml first, then feedparser);
3. publishes the items whose ids it has not published before (ids of the last ``remember`` items
   are kept in the source's cursor; the worker deduplicates by (source, id) anyway, so forgetting
   costs only work), and only then stores the new ETag / Last-Modified, so a failed publish never
   turns into a 304 that hides items;
4. updates the source's health: backoff after failures (``interval * 2**n``, capped, with jitter,
   at least any ``Retry-After``), a failure score (hard failures +1, soft +0.5, a good poll halves
   it) that disables the feed at ``disable_after``, and the ``quiet`` state for a feed that has
   given nothing new for ``quiet_after``.
"""

from __future__ import annotations

import email.utils
import hashlib
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import structlog

from producers.config import FeedSource, HealthStore, Publishing, SourceStatus
from producers.formats.rss import FeedError, read_feed
from worker.messages import Delivery, Rejection

log = structlog.get_logger(__name__)

# HTTP statuses that will not fix themselves: counted as hard failures.
HARD_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 410, 451})
HARD, SOFT = 1.0, 0.5


class FetchError(Exception):
    """A poll that got no usable document; ``hard`` failures count double toward disabling."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hard: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.hard = hard
        self.status = status
        self.retry_after = retry_after


@dataclass
class Fetched:
    """A fetched document (``body`` is None for 304 Not Modified)."""

    status: int
    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    url: str = ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class CappedDecoder:
    """Content-Encoding decoding with a cap on the output.

    httpx decodes gzip and deflate itself, but without any bound on how much one compressed chunk
    inflates to; zlib's ``max_length`` gives that bound, so the few lines are written here.
    """

    def __init__(self, encoding: str, cap: int) -> None:
        self.encoding = encoding.strip().lower()
        self.cap = cap
        self.size = 0
        self.parts: list[bytes] = []
        if self.encoding in ("gzip", "x-gzip"):
            self._z: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._z = None  # zlib-wrapped or raw deflate: decided on the first bytes
        elif self.encoding in ("", "identity"):
            self._z = None
        else:
            raise FetchError("unsupported_encoding", f"Content-Encoding {encoding!r}", hard=True)

    def _emit(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise FetchError("too_large", f"the document exceeds {self.cap} bytes once decoded", hard=True)
        self.parts.append(data)

    def feed(self, chunk: bytes) -> None:
        if self.encoding in ("", "identity"):
            self._emit(chunk)
            return
        if self._z is None:
            # RFC 9110 "deflate" is zlib-wrapped; some servers send raw deflate.
            wbits = zlib.MAX_WBITS if chunk[:1] == b"\x78" else -zlib.MAX_WBITS
            self._z = zlib.decompressobj(wbits)
        data = chunk
        try:
            while data:
                out = self._z.decompress(data, self.cap - self.size + 1)
                self._emit(out)
                data = self._z.unconsumed_tail
        except zlib.error as exc:
            raise FetchError("bad_encoding", f"cannot decode {self.encoding}: {exc}", hard=True) from exc

    def finish(self) -> bytes:
        if self._z is not None:
            self._emit(self._z.flush())
        return b"".join(self.parts)


def fetch(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    timeout: float,
    max_bytes: int,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """GET ``url`` conditionally; raises :class:`FetchError` for anything but a usable answer."""
    request_headers = {
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
        "Accept-Encoding": "gzip, deflate",
        **(headers or {}),
    }
    if etag:
        request_headers["If-None-Match"] = etag
    if last_modified:
        request_headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    try:
        with client.stream("GET", url, headers=request_headers, timeout=timeout) as response:
            status = response.status_code
            if status == 304:
                return Fetched(
                    304,
                    None,
                    etag=response.headers.get("etag") or etag,
                    last_modified=response.headers.get("last-modified") or last_modified,
                    url=str(response.url),
                )
            if status != 200:
                retry = _retry_after(response.headers.get("retry-after"))
                hard = status in HARD_STATUSES or (400 <= status < 500 and status not in (408, 425, 429))
                raise FetchError(
                    f"http_{status}",
                    f"HTTP {status} from {response.url}",
                    hard=hard,
                    status=status,
                    retry_after=retry,
                )
            declared = response.headers.get("content-length")
            encoding = response.headers.get("content-encoding", "")
            if declared and declared.isdigit() and not encoding and int(declared) > max_bytes:
                raise FetchError(
                    "too_large", f"Content-Length {declared} is over {max_bytes} bytes", hard=True
                )
            decoder = CappedDecoder(encoding, max_bytes)
            for chunk in response.iter_raw():
                decoder.feed(chunk)
                # The read timeout bounds each wait; this bounds a server that drips bytes forever.
                if time.monotonic() > deadline:
                    raise FetchError("timeout", f"no complete answer within {timeout:g}s", hard=False)
            body = decoder.finish()
            return Fetched(
                200,
                body,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                content_type=response.headers.get("content-type"),
                url=str(response.url),
            )
    except httpx.TimeoutException as exc:
        raise FetchError("timeout", f"{type(exc).__name__}: {exc}", hard=False) from exc
    except httpx.TooManyRedirects as exc:
        raise FetchError("too_many_redirects", str(exc), hard=True) from exc
    except httpx.TransportError as exc:
        raise FetchError("connection_error", f"{type(exc).__name__}: {exc}", hard=False) from exc


@dataclass
class PollResult:
    """What one poll did."""

    outcome: str  # "published", "unchanged", "not_modified", "failed", "disabled"
    published: int = 0
    rejected: int = 0
    skipped: int = 0  # items already published by an earlier poll
    error: str | None = None
    delivery_ids: list[str] = field(default_factory=list)


def _item_key(item: Delivery | Rejection) -> str:
    if isinstance(item, Delivery):
        return item.id
    return "r:" + hashlib.sha256(item.raw_b64.encode("ascii")).hexdigest()[:24]


class FeedPoller:
    """Polls one feed; the runner calls :meth:`poll` whenever :meth:`due` says so."""

    def __init__(
        self,
        config: FeedSource,
        publisher: Publishing,
        *,
        client: httpx.Client | None = None,
        health: HealthStore | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.health = health
        self.clock = clock or (lambda: datetime.now(UTC))
        self._own_client = client is None
        self.client = client or httpx.Client(
            follow_redirects=True, max_redirects=5, headers={"User-Agent": config.user_agent}
        )
        self.log = log.bind(source=config.name, url=config.url)
        loaded = health.load(config.name) if health else None
        self.status = loaded or SourceStatus(config.name, "feed")
        if not config.enabled:
            self.status.state = "disabled"
        seen = self.status.cursor.get("seen", [])
        self._seen: dict[str, None] = dict.fromkeys(seen if isinstance(seen, list) else [])

    def due(self, now: datetime | None = None) -> bool:
        """True when the feed is enabled and its next poll time has come."""
        if self.status.state == "disabled":
            return False
        now = now or self.clock()
        return self.status.next_poll is None or self.status.next_poll <= now

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def _remember(self, keys: list[str]) -> None:
        for key in keys:
            self._seen.pop(key, None)
            self._seen[key] = None
        excess = len(self._seen) - self.config.remember
        if excess > 0:
            for key in list(self._seen)[:excess]:
                del self._seen[key]
        self.status.cursor["seen"] = list(self._seen)

    def poll(self) -> PollResult:
        """Fetch, parse and publish once; never raises for a feed's own failures."""
        if self.status.state == "disabled":
            return PollResult("disabled")
        started = time.monotonic()
        now = self.clock()
        self.status.last_poll = now
        self.status.cursor.setdefault("watch_since", now.isoformat())
        try:
            fetched = fetch(
                self.client,
                self.config.url,
                etag=self.status.etag,
                last_modified=self.status.last_modified,
                timeout=self.config.timeout,
                max_bytes=self.config.max_bytes,
                headers=self.config.headers,
            )
            result = PollResult("not_modified") if fetched.body is None else self._publish(fetched)
        except FetchError as exc:
            return self._failed(exc, now, started)
        self._succeeded(result, now)
        self.log.info(
            "feed_polled",
            outcome=result.outcome,
            published=result.published,
            rejected=result.rejected,
            skipped=result.skipped,
            state=self.status.state,
            next_poll=self.status.next_poll.isoformat() if self.status.next_poll else None,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self._save()
        return result

    def _publish(self, fetched: Fetched) -> PollResult:
        try:
            doc = read_feed(
                fetched.body or b"",
                source=self.config.name,
                feed_url=self.config.url,
                content_type=fetched.content_type,
                stable_guid=self.config.stable_guid,
            )
        except FeedError as exc:
            raise FetchError(exc.code, str(exc), hard=True, status=fetched.status) from exc
        if doc.recovered_error:
            self.log.warning("feed_malformed_recovered", error=doc.recovered_error, entries=len(doc.entries))
        fresh: list[Delivery | Rejection] = []
        keys: list[str] = []
        batch_keys: set[str] = set()
        for item in doc.entries:
            key = _item_key(item)
            if key in self._seen or key in batch_keys:
                continue
            batch_keys.add(key)
            fresh.append(item)
            keys.append(key)
        skipped = len(doc.entries) - len(fresh)
        ids: list[str] = []
        if fresh:
            try:
                ids = self.publisher.publish(fresh, live=self.config.live)
            except Exception as exc:  # broker trouble: keep ETag and ids as they were, retry later
                raise FetchError("publish_failed", f"{type(exc).__name__}: {exc}", hard=False) from exc
        # Only now, with the publish confirmed, is the feed's new state taken.
        self._remember(keys)
        self.status.etag = fetched.etag
        self.status.last_modified = fetched.last_modified
        if fetched.url and fetched.url != self.config.url:
            self.status.cursor["redirected_to"] = fetched.url
        published = sum(isinstance(i, Delivery) for i in fresh)
        return PollResult(
            "published" if fresh else "unchanged",
            published=published,
            rejected=len(fresh) - published,
            skipped=skipped,
            delivery_ids=ids,
        )

    def _jitter(self, seconds: float) -> float:
        # Up to 10% later, so that feeds started together do not stay in lockstep.
        return seconds * (1 + random.random() * 0.1)

    def _succeeded(self, result: PollResult, now: datetime) -> None:
        status = self.status
        status.consecutive_failures = 0
        status.failure_score = round(status.failure_score / 2, 3) if status.failure_score >= 0.01 else 0.0
        status.last_error = None
        status.items += result.published
        if result.published:
            status.last_seen = now
        reference = status.last_seen or datetime.fromisoformat(status.cursor["watch_since"])
        quiet = self.config.quiet_after > 0 and now - reference >= timedelta(seconds=self.config.quiet_after)
        if quiet and status.state != "quiet":
            self.log.warning(
                "feed_quiet",
                last_seen=status.last_seen.isoformat() if status.last_seen else None,
                quiet_after=self.config.quiet_after,
            )
        status.state = "quiet" if quiet else "active"
        status.next_poll = now + timedelta(seconds=self._jitter(self.config.interval))

    def _failed(self, exc: FetchError, now: datetime, started: float) -> PollResult:
        status = self.status
        status.failures += 1
        status.consecutive_failures += 1
        status.failure_score = round(status.failure_score + (HARD if exc.hard else SOFT), 3)
        status.last_error = f"{exc.code}: {exc}"
        backoff = min(
            self.config.interval * 2 ** min(status.consecutive_failures, 30), self.config.max_backoff
        )
        delay = max(self._jitter(backoff), exc.retry_after or 0.0)
        status.next_poll = now + timedelta(seconds=delay)
        self.log.warning(
            "feed_poll_failed",
            code=exc.code,
            hard=exc.hard,
            http_status=exc.status,
            error=str(exc),
            failure_score=status.failure_score,
            consecutive_failures=status.consecutive_failures,
            retry_in_s=round(delay, 1),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if status.failure_score >= self.config.disable_after:
            status.state = "disabled"
            status.next_poll = None
            self.log.error("feed_disabled", failure_score=status.failure_score, last_error=status.last_error)
        self._save()
        return PollResult("failed", error=exc.code)

    def _save(self) -> None:
        if self.health is not None:
            self.health.save(self.status)
