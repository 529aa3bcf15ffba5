"""What NewsML-G2 and NITF share: story versions, publication status and the delivery they make.

A wire story is identified by a ``guid`` that stays the same across its versions; each version is
a separate delivery whose id is ``"{guid}:{version}"``, so the worker stores every version once.
The publication status is put into one vocabulary for both formats, in ``extra["pub_status"]``:

- ``usable``: publish (the default when a file does not say);
- ``embargoed``: usable later (NITF only; the embargo time, if given, is in ``extra["embargo"]``);
- ``withheld``: temporarily not to be used (a later usable version may lift it);
- ``canceled``: withdrawn for good.

``extra["withdrawn"]`` is true for ``withheld`` and ``canceled``: the worker marks every stored
version of ``extra["guid"]`` withdrawn (and keeps them). A withdrawal often carries no text; its
body then falls back to the headline, or to a fixed notice with ``extra["placeholder_body"] = True``,
because a delivery always has a body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from producers.records import build_delivery
from worker.messages import Delivery, Rejection

PUB_STATUSES = ("usable", "embargoed", "withheld", "canceled")
WITHDRAWN_STATUSES = frozenset({"withheld", "canceled"})

# NewsML-G2 says "stat:canceled"; NITF says "canceled"; both spellings of cancel(l)ed occur in the wild.
_STATUS_ALIASES = {"cancelled": "canceled", "withdrawn": "canceled", "kill": "canceled", "killed": "canceled"}


def pub_status(value: str | None) -> str:
    """A status qcode or word in the shared vocabulary; unknown or absent values read as usable."""
    if not value:
        return "usable"
    word = value.strip().rsplit(":", 1)[-1].lower()
    word = _STATUS_ALIASES.get(word, word)
    return word if word in PUB_STATUSES else "usable"


def iso_datetime(value: str | None) -> str | None:
    """An ISO 8601 timestamp (extended or basic form, as NITF's ``norm`` uses) in extended form.

    Returns None for what cannot be read, so that one odd date does not reject a story; the
    original text stays in ``extra``.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Wire timestamps without an offset are UTC by IPTC convention.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def wire_delivery(*, source: str, raw: bytes, format: str, guid: str | None, version: str | None,
                  status: str, headline: str | None, paragraphs: list[str], dateline: str | None,
                  language: str | None, first_created: str | None, version_created: str | None,
                  url: str | None = None, extra: dict[str, Any] | None = None) -> Delivery | Rejection:
    """One story version through the input contract (:func:`producers.records.build_delivery`)."""
    version = (version or "1").strip() or "1"
    guid = guid.strip() if guid else None
    body = "\n".join(p for p in paragraphs if p)
    fields_extra: dict[str, Any] = {
        "guid": guid,
        "version": version,
        "pub_status": status,
        "withdrawn": status in WITHDRAWN_STATUSES,
        "dateline": dateline or None,
        "first_created": iso_datetime(first_created) or first_created,
        "version_created": iso_datetime(version_created) or version_created,
    }
    if not body.strip() and status in WITHDRAWN_STATUSES:
        body = headline or f"{status}: {guid}"
        fields_extra["placeholder_body"] = True
    fields_extra.update(extra or {})
    published = iso_datetime(first_created) or iso_datetime(version_created)
    fields: dict[str, Any] = {
        "id": f"{guid}:{version}" if guid else None,
        "title": headline or None,
        "body": body,
        "url": url,
        "published_at": published,
        "language": language or None,
        **{k: v for k, v in fields_extra.items() if v is not None},
    }
    return build_delivery(fields, default_source=source, raw=raw, format=format)
