"""NITF (News Industry Text Format, IPTC) documents: one story version per file.

Read: the story key and version from ``docdata/du-key`` (``@key``, ``@version``), falling back to
``docdata/doc-id/@id-string`` and version 1; ``docdata/@management-status`` as the publication
status; ``date.issue/@norm`` as first created and ``date.release/@norm`` as this version's time;
the headline from ``body.head/hedline/hl1`` (or ``head/title``); ``body.head/dateline``; one
paragraph per ``body.content//p``; the language from ``@xml:lang`` or ``@baselang``.
https://iptc.org/std/NITF/
"""

from __future__ import annotations

from typing import Any

from producers.formats.wire import iso_datetime, pub_status, wire_delivery
from producers.formats.xmlsafe import XMLFailure, child, descendants, local, parse_xml, text_of
from worker.messages import Delivery, Rejection

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
FORMAT = "nitf"


def parse_nitf(raw: bytes, *, source: str) -> list[Delivery | Rejection]:
    """The story version of a NITF document, as a delivery or a rejection (a one-element list)."""
    try:
        root = parse_xml(raw)
    except XMLFailure as exc:
        return [Rejection.of(exc.code, str(exc), source=source, raw=raw, format=FORMAT)]
    if local(root.tag) != "nitf":
        return [Rejection.of("unsupported_item", f"root element is {local(root.tag)!r}, not nitf",
                             source=source, raw=raw, format=FORMAT)]
    head = child(root, "head")
    docdata = child(head, "docdata")
    du_key = child(docdata, "du-key")
    doc_id = child(docdata, "doc-id")
    guid = (du_key.get("key") if du_key is not None else None) or (
        doc_id.get("id-string") if doc_id is not None else None)
    version = (du_key.get("version") or du_key.get("generation")) if du_key is not None else None
    body_head = child(root, "body", "body.head")
    headline = text_of(child(body_head, "hedline", "hl1")) or text_of(child(head, "title")) or None
    dateline_elem = child(body_head, "dateline")
    paragraphs = [text_of(p) for p in descendants(child(root, "body", "body.content"), "p")]
    issue = child(docdata, "date.issue")
    release = child(docdata, "date.release")
    embargo = child(docdata, "date.expire")
    language = root.get(XML_LANG) or root.get("baselang")
    extra: dict[str, Any] = {
        "doc_id": doc_id.get("id-string") if doc_id is not None else None,
        "urgency": child(docdata, "urgency").get("ed-urg")  # type: ignore[union-attr]
        if child(docdata, "urgency") is not None else None,
        "byline": text_of(child(body_head, "byline")) or None,
        "distributor": text_of(child(body_head, "distributor")) or None,
        "ed_note": (child(docdata, "ed-msg").get("info") or None)  # type: ignore[union-attr]
        if child(docdata, "ed-msg") is not None else None,
        "expires": iso_datetime(embargo.get("norm")) if embargo is not None else None,
    }
    return [wire_delivery(
        source=source, raw=raw, format=FORMAT, guid=guid, version=version,
        status=pub_status(docdata.get("management-status") if docdata is not None else None),
        headline=headline, paragraphs=[p for p in paragraphs if p],
        dateline=text_of(dateline_elem) or None, language=language,
        first_created=issue.get("norm") if issue is not None else None,
        version_created=release.get("norm") if release is not None else None,
        extra={k: v for k, v in extra.items() if v is not None},
    )]
