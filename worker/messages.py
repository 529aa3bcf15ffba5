"""The message contract between producers and workers.

A producer turns what a source sent into a :class:`Delivery` (validated) or a :class:`Rejection`
(kept with its raw bytes), wraps each in a :class:`DeliveryMessage` with a time-ordered delivery id,
and sends them, a micro-batch at a time, as the keyword arguments of one ``akhbar.ingest`` task
(:class:`IngestBatch`). Messages are versioned (``v``) and never carry ORM objects.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MESSAGE_VERSION: Final = 1


class Delivery(BaseModel):
    """One story as a source sent it, validated against the input contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=512, description="the source's id for this delivery")
    body: str = Field(min_length=1)
    source: str = Field(min_length=1, max_length=128)
    title: str | None = None
    url: str | None = Field(default=None, max_length=4096)
    published_at: datetime | None = None
    language: str | None = Field(default=None, max_length=16)
    # The input format the record came from ("json", "seed", "rss", "newsml", "nitf", ...).
    format: str = "json"
    # Fields of the source record that the contract does not name, kept as sent.
    extra: dict[str, Any] = Field(default_factory=dict)


class Rejection(BaseModel):
    """A delivery that failed the input contract: kept, with why, never dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(description="stable snake_case reason code, e.g. invalid_json")
    message: str
    source: str
    source_id: str | None = None
    format: str = "json"
    # The raw bytes exactly as received, base64 so that any byte string survives JSON.
    raw_b64: str = ""

    @classmethod
    def of(cls, code: str, message: str, *, source: str, raw: bytes, source_id: str | None = None,
           format: str = "json", keep_bytes: int | None = None) -> Rejection:
        """Build a rejection; ``keep_bytes`` caps how much of an oversized payload travels."""
        kept = raw if keep_bytes is None else raw[:keep_bytes]
        return cls(code=code, message=message, source=source, source_id=source_id, format=format,
                   raw_b64=base64.b64encode(kept).decode("ascii"))

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)


class DeliveryMessage(BaseModel):
    """One delivery on the queue: either a validated record or a rejection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_id: str
    received_at: datetime
    correlation_id: str
    run_id: str | None = None
    record: Delivery | None = None
    rejected: Rejection | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DeliveryMessage:
        if (self.record is None) == (self.rejected is None):
            raise ValueError("a delivery message carries exactly one of record or rejected")
        return self

    @property
    def source(self) -> str:
        return self.record.source if self.record is not None else self.rejected.source  # type: ignore[union-attr]


class IngestBatch(BaseModel):
    """The keyword arguments of one ``akhbar.ingest`` task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = MESSAGE_VERSION
    deliveries: list[DeliveryMessage] = Field(min_length=1)


class ReenrichBatch(BaseModel):
    """The keyword arguments of one ``akhbar.reenrich`` task: stored stories to enrich again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = MESSAGE_VERSION
    story_ids: list[int] = Field(min_length=1)
    run_id: str | None = None


_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]


def new_delivery_id() -> str:
    """A UUIDv7 string: time-ordered, so sorting delivery ids sorts by receipt.

    Written here because the standard library has ``uuid.uuid7`` only from Python 3.14. A 12-bit
    counter keeps ids from one process strictly increasing within the same millisecond.
    """
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _uuid7_last[0]:
            ms = _uuid7_last[0]
            _uuid7_last[1] += 1
            if _uuid7_last[1] > 0xFFF:
                ms += 1
                _uuid7_last[1] = 0
        else:
            _uuid7_last[1] = 0
        _uuid7_last[0] = ms
        seq = _uuid7_last[1]
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))
