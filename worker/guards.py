"""Worker-side input guards: what a delivery message must satisfy before the pipeline sees it.

Producers already hold every delivery to the input contract (``producers/records.py``); these
guards repeat the checks that matter for safety on the worker, because a message can reach the
queue without a producer (anyone with broker access can push one). A delivery that fails them is
turned into a rejection with a reason code and its bytes (capped), exactly as a producer would have.

They also make the *stored text form* safe: markup is sanitized with nh3 into plain text, and the
invisible characters that can make text render as something else (bidi embeddings, overrides and
isolates, zero-width spaces and joiners of no linguistic use) are removed. The text exactly as sent
is kept with the delivery (``record.extra["original"]``), so nothing the source said is lost.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from akhbar.settings import Settings
from producers.records import json_depth
from worker.messages import DeliveryMessage, IngestBatch, Rejection

# Bidi embeddings and overrides (LRE RLE PDF LRO RLO), zero-width space, word joiner and BOM carry
# no meaning in news text, and overrides can make text render as something else: each run becomes
# one space (or nothing, next to whitespace). Isolates (LRI RLI FSI PDI) are removed. That is what the
# match form does with them too, so the sanitized text keeps the content hash of the text as sent.
# ZWNJ and ZWJ (U+200C/D) and the LRM/RLM marks (U+200E/F) stay: Arabic and Persian typing uses them.
_INVISIBLE = re.compile("(\\s?)[\u202a-\u202e\u200b\u2060\ufeff]+(\\s?)")
_ISOLATES = re.compile("[\u2066-\u2069]")
# Any of those characters: one search for them runs at C speed, while _INVISIBLE, opening with an
# optional space, is tried at every position of the text; most texts hold none of them.
_ANY_INVISIBLE = re.compile("[\u202a-\u202e\u200b\u2060\ufeff\u2066-\u2069]")
# A tag: only then is the text treated as markup ("a < b" and bare entities are left alone: as
# plain text they are inert).
_MARKUP = re.compile(r"<[A-Za-z!/?]")


def _strings(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def safe_text(text: str) -> str:
    """The stored text form: markup sanitized to plain text (nh3), invisible controls removed."""
    if _MARKUP.search(text):
        from producers.formats.rss import html_to_text

        # nh3 drops <script>/<style> with their content and every attribute (so every
        # javascript: link); the block structure stays as line breaks.
        text = html_to_text(text)
    if _ANY_INVISIBLE.search(text) is None:
        return text
    text = _ISOLATES.sub("", text)
    return _INVISIBLE.sub(_invisible_run, text)


def _invisible_run(m: re.Match[str]) -> str:
    # A line break beside the run stays a line break: it separates paragraphs.
    around = m.group(1) + m.group(2)
    return "\n" if "\n" in around else around[:1] or " "


def check(msg: DeliveryMessage, settings: Settings) -> DeliveryMessage:
    """The message itself if it is safe as is; a sanitized copy; or a rejection in its place."""
    record = msg.record
    if record is None:
        return msg
    fields = record.model_dump(mode="json")

    def reject(code: str, message: str, raw: bytes) -> DeliveryMessage:
        rejection = Rejection(code=code, message=message, source=record.source, source_id=record.id[:512],
                              format=record.format,
                              raw_b64=base64.b64encode(raw[:settings.max_delivery_bytes]).decode("ascii"))
        return msg.model_copy(update={"record": None, "rejected": rejection})

    # orjson refuses a lone surrogate: only a message it refuses has its strings walked for one
    # (it also refuses what no check here is about, an integer over 64 bits: raised as before).
    try:
        raw = orjson.dumps(fields)
    except orjson.JSONEncodeError:
        for text in _strings(fields):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raw = repr(fields).encode("utf-8", "backslashreplace")
                return reject("lone_surrogate", "a string holds an unpaired UTF-16 surrogate", raw)
        raise
    if len(raw) > settings.max_delivery_bytes:
        limit = settings.max_delivery_bytes
        return reject("too_large", f"delivery is {len(raw)} bytes, over the {limit}-byte limit", raw)
    # orjson writes NUL as the escape \u0000: without that escape in the bytes no string holds one
    # (with it, a string may only hold a backslash and "u0000": the strings say).
    if b"\\u0000" in raw and any("\x00" in text for text in _strings(fields)):
        return reject("nul_bytes", "NUL character in a field", raw)
    if json_depth(record.extra, settings.max_json_depth - 1) > settings.max_json_depth - 1:
        return reject("too_deep", f"JSON nested deeper than {settings.max_json_depth} levels", raw)
    title = safe_text(record.title) if record.title is not None else None
    body = safe_text(record.body)
    if title == record.title and body == record.body:
        return msg
    if not body.strip():
        return reject("empty_body", "body is empty once markup and invisible characters are removed", raw)
    extra = dict(record.extra)
    extra["original"] = {"title": record.title, "body": record.body}
    return msg.model_copy(update={"record": record.model_copy(update={"title": title or None, "body": body,
                                                                      "extra": extra})})


def check_batch(batch: IngestBatch, settings: Settings) -> IngestBatch:
    """:func:`check` on every delivery of a batch."""
    checked = [check(msg, settings) for msg in batch.deliveries]
    if all(a is b for a, b in zip(checked, batch.deliveries, strict=True)):
        return batch
    return batch.model_copy(update={"deliveries": checked})
