"""RSS and Atom documents (parsed by feedparser) to deliveries; HTML bodies become plain text.

Safety: a document is first parsed with defusedxml, which refuses entity declarations and external
references (XXE, billion laughs); only then does feedparser read it, from an in-memory stream
(feedparser treats a *string* argument as a URL or a file name to open, so bytes are never passed
to it bare). A document that is not well-formed XML is still handed to feedparser, whose lenient
parser recovers the entries of most broken real-world feeds.

Ids: an entry's ``guid`` (RSS) or ``id`` (Atom) is the delivery id. A feed without ids, or one whose
ids are known to change (``stable_guid=False``), gets a key derived from the normalized link and
the match form of the title: ``"k:" + sha256(link + US + title)[:32]``.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import io
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser
import nh3
import orjson

from producers.formats.xmlsafe import UnsafeXML, XMLFailure, parse_xml
from producers.records import build_delivery
from worker.messages import Delivery, Rejection
from worker.stages.normalize import match_form

__all__ = ["FeedDocument", "FeedError", "entry_key", "html_to_text", "normalize_link", "parse_feed",
           "read_feed"]

# Tags kept through sanitizing only so that their boundaries can become line breaks.
_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
               "pre", "tr", "table", "section", "article", "figcaption", "hr"}
_BLOCK_TAG = re.compile(r"</?(?:" + "|".join(sorted(_BLOCK_TAGS)) + r")\b[^>]*>", re.I)
_TRACKING_PARAMS = re.compile(r"^(?:utm_\w+|fbclid|gclid|mc_cid|mc_eid|ocid|cmpid|at_medium|at_campaign)$",
                              re.I)


class FeedError(ValueError):
    """The document is not a feed that can be read; ``code`` is a stable reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FeedDocument:
    """A parsed feed: its format (``rss`` or ``atom``), language, title and entries."""

    format: str
    title: str | None
    language: str | None
    entries: list[Delivery | Rejection] = field(default_factory=list)
    # feedparser's "bozo" flag: the document had errors it recovered from.
    recovered_error: str | None = None


def html_to_text(markup: str) -> str:
    """HTML to plain text: sanitized by nh3 (scripts, styles and comments dropped with their
    content), block boundaries as line breaks, entities decoded, whitespace within lines collapsed.

    nh3 sanitizes but renders HTML; the last step (block tags to newlines) is the few lines here,
    done on nh3's output, which is well-formed and holds only the block tags allowed through.
    """
    clean = nh3.clean(markup, tags=_BLOCK_TAGS, attributes={}, strip_comments=True, link_rel=None)
    text = html.unescape(_BLOCK_TAG.sub("\n", clean))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def normalize_link(url: str) -> str:
    """A link reduced to what identifies the page: lower-case scheme and host, no default port,
    fragment or tracking parameters, sorted query, no trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if not _TRACKING_PARAMS.match(k))
    path = parts.path.rstrip("/") or "/"
    # http and https copies of one page are the same story.
    scheme = "https" if parts.scheme.lower() in ("http", "https") else parts.scheme.lower()
    return urlunsplit((scheme, host, path, urlencode(query), ""))


def entry_key(link: str | None, title: str | None) -> str:
    """The delivery id of an entry without a stable guid: from its normalized link and title."""
    digest = hashlib.sha256()
    digest.update(normalize_link(link).encode("utf-8") if link else b"")
    digest.update(b"\x1f")
    digest.update(match_form(title).encode("utf-8") if title else b"")
    return "k:" + digest.hexdigest()[:32]


def _iso(parsed: time.struct_time | None) -> str | None:
    if parsed is None:
        return None
    # feedparser gives every date as a UTC struct_time.
    return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC).isoformat()


def _text(detail: dict[str, Any] | None, fallback: str | None) -> str:
    value = (detail or {}).get("value", fallback) or ""
    kind = (detail or {}).get("type", "text/html")
    return html_to_text(value) if "html" in kind else value.strip()


def _entry(entry: dict[str, Any], *, source: str, feed_format: str, feed_language: str | None,
           feed_url: str | None, stable_guid: bool) -> Delivery | Rejection:
    title = _text(entry.get("title_detail"), entry.get("title")) or None
    bodies = [_text(c, None) for c in entry.get("content") or []]
    if entry.get("summary") is not None:
        bodies.append(_text(entry.get("summary_detail"), entry.get("summary")))
    body = max(bodies, key=len, default="")
    link = entry.get("link")
    guid = (entry.get("id") or "").strip() or None
    item_id = guid if guid and stable_guid else (entry_key(link, title) if (link or title) else None)
    language = None
    for detail in [*(entry.get("content") or []), entry.get("summary_detail"), entry.get("title_detail")]:
        if detail and detail.get("language"):
            language = detail["language"]
            break
    extra: dict[str, Any] = {"feed_format": feed_format}
    if feed_url:
        extra["feed_url"] = feed_url
    if guid and item_id != guid:
        extra["guid"] = guid
    if entry.get("author"):
        extra["author"] = entry["author"]
    tags = [t.get("term") for t in entry.get("tags") or [] if t.get("term")]
    if tags:
        extra["tags"] = tags
    # Read past FeedParserDict's mapping, which falls back from updated to published with a warning.
    updated = _iso(dict.get(entry, "updated_parsed"))
    if updated:
        extra["updated_at"] = updated
    fields: dict[str, Any] = {
        "id": item_id,
        "title": title,
        "body": body,
        "url": link,
        "published_at": _iso(dict.get(entry, "published_parsed")) or updated,
        "language": language or feed_language,
        **extra,
    }
    # The raw bytes kept with a rejection: the entry as feedparser read it (the feed is not split).
    raw = orjson.dumps({"id": guid, "title": entry.get("title"), "link": link,
                        "summary": entry.get("summary"),
                        "content": [c.get("value") for c in entry.get("content") or []]})
    return build_delivery(fields, default_source=source, raw=raw, format=feed_format)


def read_feed(raw: bytes, *, source: str, feed_url: str | None = None, content_type: str | None = None,
              stable_guid: bool = True) -> FeedDocument:
    """Parse a fetched feed; raises :class:`FeedError` when nothing can be read from it."""
    try:
        parse_xml(raw)
    except UnsafeXML as exc:
        raise FeedError("unsafe_xml", str(exc)) from exc
    except XMLFailure as exc:
        # Malformed documents go to feedparser's lenient parser, but never one declaring entities.
        if b"<!ENTITY" in raw or b"<!entity" in raw:
            raise FeedError("unsafe_xml", f"entity declarations in a malformed document: {exc}") from exc
    headers = {"content-type": content_type or "application/xml"}
    if feed_url:
        headers["content-location"] = feed_url
    parsed = feedparser.parse(io.BytesIO(raw), response_headers=headers, resolve_relative_uris=True,
                              sanitize_html=False)
    version = parsed.get("version") or ""
    if not version and not parsed.entries:
        reason = parsed.get("bozo_exception")
        raise FeedError("invalid_feed", f"not an RSS or Atom feed: {reason or 'no feed element'}")
    feed_format = "atom" if version.startswith("atom") else "rss"
    meta = parsed.get("feed", {})
    language = meta.get("language") or (meta.get("title_detail") or {}).get("language")
    doc = FeedDocument(format=feed_format, title=meta.get("title"), language=language,
                       recovered_error=str(parsed.get("bozo_exception")) if parsed.get("bozo") else None)
    doc.entries = [_entry(e, source=source, feed_format=feed_format, feed_language=language,
                          feed_url=feed_url, stable_guid=stable_guid) for e in parsed.entries]
    return doc


def parse_feed(raw: bytes, *, source: str, feed_url: str | None = None) -> list[Delivery | Rejection]:
    """A feed file's entries; an unreadable feed becomes one rejection (for drop folders)."""
    try:
        return read_feed(raw, source=source, feed_url=feed_url).entries
    except FeedError as exc:
        return [Rejection.of(exc.code, str(exc), source=source, raw=raw, format="feed")]
