"""Wire formats: bytes in a source's format become deliveries through the one input contract.

Each parser is total like those of :mod:`producers.records`: whatever the bytes, it returns
deliveries and rejections, never raises. :func:`parse_file` picks the parser for a file dropped in
a folder, from its name and, for XML, from its root element.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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

_XML_ROOTS = {
    "newsItem": "newsml",
    "newsMessage": "newsml",
    "packageItem": "newsml",
    "nitf": "nitf",
    "rss": "feed",
    "feed": "feed",
    "RDF": "feed",
}


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


def parse_bytes(
    raw: bytes,
    *,
    name: str,
    format: str,
    source: str,
    max_bytes: int,
    max_depth: int,
    feed_url: str | None = None,
) -> list[Delivery | Rejection]:
    """Everything one file (or one fetched document) holds, as deliveries and rejections."""
    stem = Path(name).stem
    if format == "auto":
        detected = detect_format(name, raw)
        if detected is None:
            return [
                Rejection.of(
                    "unknown_format",
                    f"cannot tell the format of {name!r}",
                    source=source,
                    raw=raw,
                    source_id=stem,
                    format="unknown",
                    keep_bytes=max_bytes,
                )
            ]
        format = detected
    if format == "seed":
        return [parse_seed(raw, stem=stem, max_bytes=max_bytes, source=source)]
    if format == "json":
        return [parse_json_record(raw, default_source=source, max_bytes=max_bytes, max_depth=max_depth)]
    if format == "jsonl":
        # The size limit holds per line (per delivery) here, not for the whole document.
        return list(
            iter_json_lines(
                enumerate(raw.splitlines(keepends=True), start=1),
                default_source=source,
                max_bytes=max_bytes,
                max_depth=max_depth,
            )
        )
    if format in ("newsml", "nitf", "feed"):
        text = check_bytes(raw, source=source, max_bytes=max_bytes, format=format, source_id=stem)
        if isinstance(text, Rejection):
            return [text]
        if format == "feed":
            return parse_feed(raw, source=source, feed_url=feed_url)
        parser = parse_newsml if format == "newsml" else parse_nitf
        return parser(raw, source=source)
    return [
        Rejection.of(
            "unknown_format",
            f"format {format!r} is not one of {FORMATS}",
            source=source,
            raw=raw,
            source_id=stem,
            format=format,
            keep_bytes=max_bytes,
        )
    ]


def _capped_lines(fh: BinaryIO, cap: int) -> Iterator[tuple[int, bytes]]:
    """Numbered lines, each read no further than one byte past ``cap`` (the rest of an oversized
    line is skipped, never held), so one endless line cannot exhaust memory."""
    lineno = 0
    while True:
        line = fh.readline(cap + 2)
        if not line:
            return
        lineno += 1
        if len(line) > cap + 1 and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            line = line[: cap + 1]
        yield lineno, line


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def parse_file(
    path: Path, *, format: str, source: str, max_bytes: int, max_depth: int
) -> list[Delivery | Rejection]:
    """A dropped file's deliveries; ``name.gz`` files are read through gzip as ``name``.

    A JSONL file holds many deliveries, so it is read line by line with the size cap per line;
    any other file is one document, read no further than one byte past the cap (so an oversized
    file, or a gzip bomb, becomes a ``too_large`` rejection without being inflated whole).
    """
    name = path.name.removesuffix(".gz") if path.name.endswith(".gz") else path.name
    fmt = format
    if fmt == "auto" and Path(name).suffix.lower() in (".jsonl", ".ndjson"):
        fmt = "jsonl"
    try:
        with _open(path) as fh:
            if fmt == "jsonl":
                return list(
                    iter_json_lines(
                        _capped_lines(fh, max_bytes),
                        default_source=source,
                        max_bytes=max_bytes,
                        max_depth=max_depth,
                    )
                )
            raw = fh.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt gzip stream
        return [
            Rejection.of(
                "invalid_gzip",
                f"cannot read {path.name}: {exc}",
                source=source,
                raw=path.read_bytes()[:max_bytes],
                source_id=Path(name).stem,
                format=fmt,
            )
        ]
    return parse_bytes(raw, name=name, format=fmt, source=source, max_bytes=max_bytes, max_depth=max_depth)


def read_xml_file(path: Path, source: str | None, settings: Settings) -> list[Delivery | Rejection]:
    """A file reader for :mod:`producers.files` (``akhbar replay``): NewsML-G2, NITF or a feed file."""
    return parse_file(
        path,
        format="auto",
        source=source or "wire",
        max_bytes=settings.max_delivery_bytes,
        max_depth=settings.max_json_depth,
    )


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
