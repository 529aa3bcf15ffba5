"""Safe XML parsing for every wire format: no external entities, no entity expansion, no network.

defusedxml's ElementTree refuses entity declarations (billion laughs, quadratic blowup) and external
entity or DTD references (XXE) before they are expanded; a ``<!DOCTYPE nitf SYSTEM "nitf.dtd">``
line without entities, which real NITF files carry, is allowed and never fetched.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

__all__ = ["UnsafeXML", "XMLFailure", "child", "children", "local", "parse_xml", "root_name", "text_of"]


class XMLFailure(ValueError):
    """The document is not well-formed XML; ``code`` is the rejection reason code."""

    code = "invalid_xml"


class UnsafeXML(XMLFailure):
    """The document declares entities or references external resources: refused, not parsed."""

    code = "unsafe_xml"


def parse_xml(raw: bytes) -> Element:
    """The root element of ``raw``, or :class:`XMLFailure` / :class:`UnsafeXML`."""
    try:
        return fromstring(raw)
    except DefusedXmlException as exc:
        raise UnsafeXML(f"refused: {type(exc).__name__}: {exc}") from exc
    except ParseError as exc:
        raise XMLFailure(f"not well-formed XML: {exc}") from exc


_PROLOG = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>", re.S)
_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


def root_name(raw: bytes) -> str | None:
    """The local name of the first element, read without parsing (used to pick a parser only)."""
    head = raw[:65536].removeprefix(b"\xef\xbb\xbf")
    pos = 0
    while (match := _PROLOG.match(head, pos)) is not None and match.end() > pos:
        pos = match.end()
    element = _ELEMENT.match(head, pos)
    return element.group(1).decode("ascii") if element else None


def local(tag: str) -> str:
    """``{namespace}name`` -> ``name``."""
    return tag.rsplit("}", 1)[-1]


def children(elem: Element | None, name: str) -> list[Element]:
    """Direct children with local name ``name``, in any namespace."""
    if elem is None:
        return []
    return [c for c in elem if isinstance(c.tag, str) and local(c.tag) == name]


def child(elem: Element | None, *path: str) -> Element | None:
    """The first element down a path of local names, or None."""
    for name in path:
        found = children(elem, name)
        if not found:
            return None
        elem = found[0]
    return elem


def descendants(elem: Element | None, name: str) -> list[Element]:
    """Every element below ``elem`` with local name ``name``, in document order."""
    if elem is None:
        return []
    return [e for e in elem.iter() if isinstance(e.tag, str) and local(e.tag) == name and e is not elem]


def text_of(elem: Element | None) -> str:
    """All text inside an element (its descendants' too), whitespace runs collapsed."""
    if elem is None:
        return ""
    return " ".join("".join(elem.itertext()).split())
