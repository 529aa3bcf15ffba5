"""File sources: seed files, JSON / JSONL (plain or gzip), directories (recursively) and stdin.

Formats are picked by file name; XML wire formats (NewsML-G2, NITF) register themselves in
:data:`READERS` from ``producers.formats``.
"""

from __future__ import annotations

import contextlib
import gzip
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import structlog

from akhbar.settings import Settings
from producers.records import build_delivery, iter_json_lines, parse_json_record, parse_seed
from worker.messages import Delivery, Rejection

log = structlog.get_logger("akhbar.producers.files")

Item = Delivery | Rejection
# A reader gets the file's path, its bytes opener, the source name to use, and the settings.
Reader = Callable[[Path, str | None, Settings], Iterable[Item]]
READERS: dict[str, Reader] = {}


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(fh, start=1)


def _open(path: Path) -> BinaryIO:
    fh = path.open("rb")
    if fh.read(2) == b"\x1f\x8b":
        fh.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _source_for(path: Path, source: str | None, fallback: str) -> str:
    return source or fallback


def read_seed(path: Path, source: str | None, settings: Settings) -> Iterable[Item]:
    raw = path.read_bytes() if path.stat().st_size <= settings.max_delivery_bytes else \
        path.open("rb").read(settings.max_delivery_bytes + 1)
    yield parse_seed(raw, stem=path.name.removesuffix(".txt"), max_bytes=settings.max_delivery_bytes,
                     source=_source_for(path, source, "seeds"))


def read_jsonl(path: Path, source: str | None, settings: Settings) -> Iterable[Item]:
    name = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    with _open(path) as fh:
        yield from iter_json_lines(_lines(fh), default_source=_source_for(path, source, name),
                                   max_bytes=settings.max_delivery_bytes, max_depth=settings.max_json_depth)


def read_json(path: Path, source: str | None, settings: Settings) -> Iterable[Item]:
    """A ``.json`` file: one delivery object, or an array of them."""
    import orjson

    name = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    default_source = _source_for(path, source, name)
    with _open(path) as fh:
        raw = fh.read()
    if raw.lstrip()[:1] == b"[":
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield Rejection.of("invalid_json", f"invalid JSON: {exc}", source=default_source, raw=raw)
            return
        for value in values:
            item = orjson.dumps(value)
            if isinstance(value, dict):
                yield build_delivery(value, default_source=default_source, raw=item)
            else:
                yield Rejection.of("not_an_object", "array element is not a JSON object",
                                   source=default_source, raw=item)
        return
    yield parse_json_record(raw, default_source=default_source, max_bytes=settings.max_delivery_bytes,
                            max_depth=settings.max_json_depth)


READERS.update({".txt": read_seed, ".jsonl": read_jsonl, ".ndjson": read_jsonl, ".json": read_json})


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _load_format_plugins() -> None:
    with contextlib.suppress(ImportError):
        import producers.formats  # noqa: F401  (registers XML readers, when present)


def read_file(path: Path, source: str | None, settings: Settings) -> Iterable[Item]:
    """Deliveries of one file, by its extension; an unknown extension is a rejected delivery."""
    _load_format_plugins()
    reader = READERS.get(_suffix(path))
    if reader is None:
        raw = path.open("rb").read(settings.max_delivery_bytes)
        yield Rejection.of("unsupported_format", f"no reader for {path.name!r}", source=source or "files",
                           raw=raw, source_id=path.name)
        return
    yield from reader(path, source, settings)


def iter_paths(paths: Iterable[str | Path], *, source: str | None, settings: Settings) -> Iterator[Item]:
    """Every delivery under ``paths`` (files, directories walked recursively in sorted order, or ``-``
    for JSONL on stdin)."""
    _load_format_plugins()
    for entry in paths:
        if str(entry) == "-":
            yield from iter_json_lines(_lines(sys.stdin.buffer), default_source=source or "stdin",
                                       max_bytes=settings.max_delivery_bytes,
                                       max_depth=settings.max_json_depth)
            continue
        path = Path(entry)
        if path.is_dir():
            skipped = 0
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in child.relative_to(path).parts):
                    continue
                if _suffix(child) not in READERS:
                    skipped += 1
                    continue
                yield from read_file(child, source, settings)
            if skipped:
                log.warning("files_skipped", directory=str(path), count=skipped, reason="unknown extension")
        elif path.is_file():
            yield from read_file(path, source, settings)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
