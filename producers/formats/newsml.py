"""NewsML-G2 (IPTC): ``newsItem`` documents, or ``newsMessage`` envelopes holding several.

Read from each news item: ``@guid`` and ``@version``, ``itemMeta`` (``versionCreated``,
``firstCreated``, ``pubStatus``, ``provider``, ``signal``), ``contentMeta`` (``headline``,
``dateline``, ``language``, ``slugline``, ``urgency``, ``subject``) and the first text content of
``contentSet``: ``inlineXML`` (NITF or XHTML, one paragraph per ``<p>``) or ``inlineData``
(plain text). https://iptc.org/std/NewsML-G2/guidelines/
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, tostring

from producers.formats.wire import iso_datetime, pub_status, wire_delivery
from producers.formats.xmlsafe import XMLFailure, child, children, descendants, local, parse_xml, text_of
from producers.records import split_paragraphs
from worker.messages import Delivery, Rejection

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
FORMAT = "newsml"


def _content_paragraphs(item: Element) -> list[str]:
    content_set = child(item, "contentSet")
    for content in list(content_set) if content_set is not None else []:
        kind = local(content.tag) if isinstance(content.tag, str) else ""
        ctype = (content.get("contenttype") or "").lower()
        if kind == "inlineXML":
            paragraphs = [text_of(p) for p in descendants(content, "p")]
            paragraphs = [p for p in paragraphs if p]
            if not paragraphs and text_of(content):
                paragraphs = [text_of(content)]
            if paragraphs:
                return paragraphs
        elif kind == "inlineData" and (not ctype or ctype.startswith("text/")):
            paragraphs = split_paragraphs(content.text or "")
            if paragraphs:
                return paragraphs
    return []


def _headline(meta: Element | None, lang: str | None) -> str | None:
    headlines = children(meta, "headline")
    if not headlines:
        return None
    # Several headlines may be given in several languages: take the item's own language first.
    for elem in headlines:
        if lang and elem.get(XML_LANG, "").split("-")[0] == lang.split("-")[0]:
            return text_of(elem) or None
    return text_of(headlines[0]) or None


def _item(item: Element, *, source: str, raw: bytes) -> Delivery | Rejection:
    meta = child(item, "itemMeta")
    cmeta = child(item, "contentMeta")
    lang_elem = child(cmeta, "language")
    language = (lang_elem.get("tag") if lang_elem is not None else None) or item.get(XML_LANG)
    status_elem = child(meta, "pubStatus")
    status = pub_status(status_elem.get("qcode") if status_elem is not None else None)
    provider = child(meta, "provider")
    extra: dict[str, Any] = {
        "provider": (provider.get("qcode") or provider.get("literal") or text_of(provider) or None)
        if provider is not None else None,
        "signals": [s.get("qcode") for s in children(meta, "signal") if s.get("qcode")] or None,
        "slugline": text_of(child(cmeta, "slugline")) or None,
        "urgency": text_of(child(cmeta, "urgency")) or None,
        "subjects": [s.get("qcode") for s in children(cmeta, "subject") if s.get("qcode")] or None,
        "ed_note": text_of(child(meta, "edNote")) or None,
        "embargo": iso_datetime(text_of(child(meta, "embargoed"))),
    }
    return wire_delivery(
        source=source, raw=raw, format=FORMAT, guid=item.get("guid"), version=item.get("version"),
        status=status, headline=_headline(cmeta, language), paragraphs=_content_paragraphs(item),
        dateline=text_of(child(cmeta, "dateline")) or None, language=language,
        first_created=text_of(child(meta, "firstCreated")) or None,
        version_created=text_of(child(meta, "versionCreated")) or None,
        extra={k: v for k, v in extra.items() if v is not None},
    )


def parse_newsml(raw: bytes, *, source: str) -> list[Delivery | Rejection]:
    """Every news item of a NewsML-G2 document, as deliveries (one per item version) or rejections."""
    try:
        root = parse_xml(raw)
    except XMLFailure as exc:
        return [Rejection.of(exc.code, str(exc), source=source, raw=raw, format=FORMAT)]
    name = local(root.tag)
    if name == "newsItem":
        return [_item(root, source=source, raw=raw)]
    if name == "newsMessage":
        items = [e for e in descendants(root, "newsItem")]
        if not items:
            return [Rejection.of("no_items", "the newsMessage holds no newsItem", source=source, raw=raw,
                                 format=FORMAT)]
        # Each item keeps its own XML as its raw bytes, so a rejected item is kept on its own.
        return [_item(item, source=source, raw=tostring(item, encoding="utf-8")) for item in items]
    return [Rejection.of("unsupported_item", f"a NewsML-G2 {name} carries no text story", source=source,
                         raw=raw, format=FORMAT)]
