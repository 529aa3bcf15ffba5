"""Wire formats: bytes in a source's format become deliveries through the one input contract.

Each parser is total like those of :mod:`producers.records`: whatever the bytes, it returns
deliveries and rejections, never raises. :func:`parse_file` picks the parser for a file dropped in
a folder, from its name and, for XML, from its root element.
"""

from __future__ import annotations

from pathlib import Path

from akhbar.settings import Settings
from producers.formats.newsml import parse_newsml
from producers.formats.nitf import parse_nitf
from producers.formats.rss import parse_feed
from producers.formats.xmlsafe import UnsafeXML, XMLFailure, parse_xml, root_name
from producers.records import check_bytes, iter_json_lines, parse_json_record, parse_seed
from worker.messages import Delivery, Rejection

__all__ = ["FORMATS", "detect_format", "parse_bytes", "parse_file"]

# The formats a drop folder accepts; "auto" picks one per file.
FORMATS = ("auto", "seed", "json", "jsonl", "newsml", "nitf", "feed")

_XML_ROOTS = {"newsItem": "newsml", "newsMessage": "newsml", "packageItem": "newsml",
              "nitf": "nitf", "rss": "feed", "feed": "feed", "RDF": "feed"}


def detect_format(name: str, raw: bytes) -> str | None:
    """The format of a file from its suffix, and for XML from its root element's local name."""
    suffix = Path(name).suffix.lower()
    if suffix == ".txt":
        return "seed"
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in XML_SUFFIXES:
        return _XML_ROOTS.get(root_name(raw) or "")
    return None


def parse_bytes(raw: bytes, *, name: str, format: str, source: str, max_bytes: int,
                max_depth: int, feed_url: str | None = None) -> list[Delivery | Rejection]:
    """Everything one file (or one fetched document) holds, as deliveries and rejections."""
    stem = Path(name).stem
    if format == "auto":
        detected = detect_format(name, raw)
        if detected is None:
            return [Rejection.of("unknown_format", f"cannot tell the format of {name!r}",
                                 source=source, raw=raw, source_id=stem, format="unknown",
                                 keep_bytes=max_bytes)]
        format = detected
    if format == "seed":
        return [parse_seed(raw, stem=stem, max_bytes=max_bytes, source=source)]
    if format == "json":
        return [parse_json_record(raw, default_source=source, max_bytes=max_bytes, max_depth=max_depth)]
    if format == "jsonl":
        # The size limit holds per line (per delivery) here, not for the whole document.
        return list(iter_json_lines(enumerate(raw.splitlines(keepends=True), start=1),
                                    default_source=source, max_bytes=max_bytes, max_depth=max_depth))
    if format in ("newsml", "nitf", "feed"):
        text = check_bytes(raw, source=source, max_bytes=max_bytes, format=format, source_id=stem)
        if isinstance(text, Rejection):
            return [text]
        if format == "feed":
            return parse_feed(raw, source=source, feed_url=feed_url)
        parser = parse_newsml if format == "newsml" else parse_nitf
        return parser(raw, source=source)
    return [Rejection.of("unknown_format", f"format {format!r} is not one of {FORMATS}", source=source,
                         raw=raw, source_id=stem, format=format, keep_bytes=max_bytes)]


def parse_file(path: Path, *, format: str, source: str, max_bytes: int,
               max_depth: int) -> list[Delivery | Rejection]:
    """A dropped file's deliveries.

    A JSONL file holds many deliveries, so it is read line by line with the size cap per line;
    any other file is one document, read no further than one byte past the cap (so an oversized
    file becomes a ``too_large`` rejection without being loaded whole).
    """
    fmt = format
    if fmt == "auto" and path.suffix.lower() in (".jsonl", ".ndjson"):
        fmt = "jsonl"
    with path.open("rb") as fh:
        if fmt == "jsonl":
            return list(iter_json_lines(enumerate(fh, start=1), default_source=source,
                                        max_bytes=max_bytes, max_depth=max_depth))
        raw = fh.read(max_bytes + 1)
    return parse_bytes(raw, name=path.name, format=fmt, source=source, max_bytes=max_bytes,
                       max_depth=max_depth)


def read_xml_file(path: Path, source: str | None, settings: Settings) -> list[Delivery | Rejection]:
    """A file reader for :mod:`producers.files` (``akhbar replay``): NewsML-G2, NITF or a feed file."""
    return parse_file(path, format="auto", source=source or "wire", max_bytes=settings.max_delivery_bytes,
                      max_depth=settings.max_json_depth)


XML_SUFFIXES = (".xml", ".nitf", ".newsml", ".g2", ".rss", ".atom")


def _register() -> None:
    # producers.files (the file reader table of ``akhbar replay``) imports this package lazily and
    # lets it add the XML readers; the parsers here do not depend on it.
    try:
        from producers import files
    except ImportError:
        return

    for suffix in XML_SUFFIXES:
        files.READERS.setdefault(suffix, read_xml_file)


_register()

__all__ += ["XML_SUFFIXES", "UnsafeXML", "XMLFailure", "parse_xml", "read_xml_file"]
