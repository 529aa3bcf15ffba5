"""The input contract: raw bytes from a source become a :class:`Delivery` or a :class:`Rejection`.

Every parser here is total: whatever the bytes, it returns one of the two, never raises. A
rejection keeps the raw bytes and a stable reason code, so that every delivery ends stored,
matched to a stored story, or rejected with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from worker.messages import Delivery, Rejection

# Fields the JSON input contract names; anything else is kept in ``extra``.
CONTRACT_FIELDS = ("id", "body", "title", "source", "url", "published_at", "language")

# Bidi overrides and isolates can make a headline render as something else: they are refused in
# ids and sources (they stay in text, where the normalizer strips them from the match form).
_CONTROL_IN_KEY = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def json_depth(value: Any, limit: int) -> int:
    """Depth of nested containers, iteratively (no recursion limit to trip), stopping past limit."""
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            depth = max(depth, level)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return depth


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_bytes(raw: bytes, *, source: str, max_bytes: int, format: str,
                source_id: str | None = None) -> Rejection | str:
    """Size, NUL and UTF-8 checks shared by every format; returns the decoded text or a rejection."""
    if len(raw) > max_bytes:
        return Rejection.of("too_large", f"delivery is {len(raw)} bytes, over the {max_bytes}-byte limit",
                            source=source, raw=raw, source_id=source_id, format=format,
                            keep_bytes=max_bytes)
    if b"\x00" in raw:
        return Rejection.of("nul_bytes", f"NUL byte at offset {raw.index(0)}", source=source,
                            raw=raw, source_id=source_id, format=format)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection.of("invalid_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}",
                            source=source, raw=raw, source_id=source_id, format=format)


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("published_at must be an ISO 8601 string")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def build_delivery(fields: dict[str, Any], *, default_source: str, raw: bytes,
                   format: str = "json") -> Delivery | Rejection:
    """Validate a mapping against the contract: the one place every format's record goes through."""
    source = fields.get("source") or default_source
    sid = fields.get("id")
    sid_text = str(sid) if isinstance(sid, str | int) and not isinstance(sid, bool) else None

    def reject(code: str, message: str) -> Rejection:
        src = source if isinstance(source, str) and source else default_source
        return Rejection.of(code, message, source=src, raw=raw, source_id=sid_text, format=format)

    if not isinstance(source, str) or not source.strip():
        return reject("invalid_field", "source must be a non-empty string")
    if sid is None:
        return reject("missing_id", "the record has no 'id'")
    if sid_text is None or not sid_text.strip():
        return reject("invalid_field", "id must be a non-empty string or an integer")
    if _CONTROL_IN_KEY.search(sid_text) or _CONTROL_IN_KEY.search(source):
        return reject("invalid_field", "id and source may not contain control, bidi or zero-width characters")
    body = fields.get("body")
    if body is None:
        return reject("missing_body", "the record has no 'body'")
    if not isinstance(body, str):
        return reject("invalid_field", "body must be a string")
    if not body.strip():
        return reject("empty_body", "body is empty or only whitespace")
    for name in ("title", "url", "language"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            return reject("invalid_field", f"{name} must be a string")
    published = fields.get("published_at")
    try:
        published_at = None if published in (None, "") else _parse_datetime(published)
    except ValueError as exc:
        return reject("invalid_field", f"published_at is not ISO 8601: {exc}")
    extra = {k: v for k, v in fields.items() if k not in CONTRACT_FIELDS}
    try:
        return Delivery(id=sid_text.strip(), body=body, source=source.strip(), title=fields.get("title"),
                        url=fields.get("url"), published_at=published_at,
                        language=fields.get("language"), format=format, extra=extra)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return reject("invalid_field", f"{where}: {first['msg']}")


def parse_json_record(raw: bytes, *, default_source: str, max_bytes: int, max_depth: int,
                      format: str = "json") -> Delivery | Rejection:
    """One JSON object (a JSONL line, a pushed payload) to a delivery or a rejection."""
    text = check_bytes(raw, source=default_source, max_bytes=max_bytes, format=format)
    if isinstance(text, Rejection):
        return text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses lone surrogates and nesting past 1,024 levels itself; name those precisely.
        text_error = str(exc).lower()
        code = ("too_deep" if "depth" in text_error or "recursion" in text_error
                else "lone_surrogate" if "surrogate" in text_error else "invalid_json")
        return Rejection.of(code, f"invalid JSON: {exc}", source=default_source, raw=raw, format=format)
    if not isinstance(value, dict):
        return Rejection.of("not_an_object", f"expected a JSON object, got {type(value).__name__}",
                            source=default_source, raw=raw, format=format)
    if json_depth(value, max_depth) > max_depth:
        return Rejection.of("too_deep", f"JSON nested deeper than {max_depth} levels",
                            source=default_source, raw=raw, format=format)
    if _has_lone_surrogate(value):
        return Rejection.of("lone_surrogate", "a string holds an unpaired UTF-16 surrogate",
                            source=default_source, raw=raw, format=format)
    return build_delivery(value, default_source=default_source, raw=raw, format=format)


# A seed body's paragraphs were joined with ``., ``: each paragraph ends with "." and the next
# follows after ", ". The same three characters also occur inside sentences ("U.S., and",
# "أ.ف.ب., "، "3., 4"), so a join is only taken where the text before the dot is a real word end and
# the text after the comma starts a paragraph.
_SEED_JOIN = re.compile(r"\.,[ \t]+")
_ABBREV_BEFORE = re.compile(r"(?:^|[\s.(])(?:\w)$|(?:\w\.){1,}\w$|\d$")


def split_seed_body(body: str) -> list[str]:
    """Split a seed body back into paragraphs at the ``., `` joins, keeping each final dot."""
    paragraphs: list[str] = []
    start = 0
    for match in _SEED_JOIN.finditer(body):
        before = body[max(start, match.start() - 12):match.start()]
        after = body[match.end():match.end() + 1]
        if not after or after.isdigit() or ("a" <= after <= "z"):
            continue
        if _ABBREV_BEFORE.search(before):
            continue
        paragraphs.append(body[start:match.start() + 1].strip())
        start = match.end()
    tail = body[start:].strip()
    if tail:
        paragraphs.append(tail)
    return [p for p in paragraphs if p]


def split_paragraphs(body: str, format: str = "json") -> list[str]:
    """Paragraphs of a body: the seed joins for seed files, line breaks for everything else."""
    if format == "seed":
        return split_seed_body(body)
    return [line.strip() for line in re.split(r"\r\n|\r|\n|\u2029", body) if line.strip()]


def parse_seed(raw: bytes, *, stem: str, max_bytes: int, source: str = "seeds") -> Delivery | Rejection:
    """A seed file: headline on line 1, a blank line, then the body; id = the file name's stem."""
    text = check_bytes(raw, source=source, max_bytes=max_bytes, format="seed", source_id=stem)
    if isinstance(text, Rejection):
        return text
    if text.startswith("\ufeff"):
        text = text[1:]
    head, sep, body = text.replace("\r\n", "\n").partition("\n")
    if not sep or not body.startswith("\n"):
        return Rejection.of("invalid_seed", "a seed file is a headline line, a blank line, then the body",
                            source=source, raw=raw, source_id=stem, format="seed")
    return build_delivery({"id": stem, "title": head.strip() or None, "body": body.strip("\n"),
                           "source": source}, default_source=source, raw=raw, format="seed")


def iter_json_lines(lines: Iterable[tuple[int, bytes]], *, default_source: str, max_bytes: int,
                    max_depth: int) -> Iterable[Delivery | Rejection]:
    """Each non-blank line of a JSONL stream, parsed; the line number goes into a rejection's message."""
    for lineno, line in lines:
        if not line.strip():
            continue
        result = parse_json_record(line.rstrip(b"\r\n"), default_source=default_source,
                                   max_bytes=max_bytes, max_depth=max_depth)
        if isinstance(result, Rejection):
            result = result.model_copy(update={"message": f"line {lineno}: {result.message}"})
        yield result
