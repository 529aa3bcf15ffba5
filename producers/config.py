"""``sources.toml``: the sources one producer process runs, as typed pydantic models.

Each ``[[source]]`` table has a ``kind``: ``feed`` (RSS or Atom over HTTP; ``rss`` and ``atom``
are accepted as aliases), ``dropfolder`` (a watched directory of seed, JSON, JSONL, NewsML-G2, NITF
or feed files) or ``push`` (the HTTP push endpoint). Durations are seconds or strings such as
``"90s"``, ``"5m"``, ``"6h"``, ``"1d"``. Relative paths are resolved against the file's directory.

This module also holds what every running source shares: :class:`SourceStatus` (its health, as
stored by ``models.sources``) and the :class:`Publishing` and :class:`HealthStore` interfaces.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from worker.messages import Delivery, Rejection

__all__ = [
    "DropFolderSource",
    "FeedSource",
    "HealthStore",
    "MemoryHealth",
    "Publishing",
    "PushSource",
    "SourceConfig",
    "SourceStatus",
    "SourcesConfig",
    "load_config",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"500ms"``, ``"30s"``, ``"5m"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '5m', '6h', '1d')")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
SourceName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.\-]+$")]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SourceName
    enabled: bool = True
    # Live sources publish to the live queue, which workers drain before the bulk (replay) queue.
    live: bool = True


class FeedSource(_Source):
    """An RSS or Atom feed polled over HTTP."""

    kind: Literal["feed"] = "feed"
    url: str = Field(pattern=r"^https?://")
    interval: Duration = 300.0
    timeout: Duration = 20.0
    # Cap on the (decompressed) document: a feed larger than this is a failed poll, not parsed.
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # False for feeds whose guids change between polls: ids then come from link and title.
    stable_guid: bool = True
    # A feed with no new item for this long is marked quiet (still polled); 0 never.
    quiet_after: Duration = 6 * 3600.0
    # Backoff after failed polls: interval * 2**(consecutive failures), at most this.
    max_backoff: Duration = 6 * 3600.0
    # A hard failure (404, 410, unreadable or unsafe document, oversized) adds 1 to the failure
    # score, a soft one (timeout, 5xx, 429, connection error) 0.5; a good poll halves it. At this
    # score the source is disabled until re-enabled (``akhbar sources enable NAME``).
    disable_after: float = Field(default=10.0, gt=0)
    user_agent: str = "akhbar-feed-poller/0.1"
    headers: dict[str, str] = Field(default_factory=dict)
    # How many item ids are remembered to skip already-published items (the worker deduplicates
    # by (source, id) anyway; this only saves work).
    remember: int = Field(default=2000, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") in ("rss", "atom"):
            data = {**data, "kind": "feed"}
        return data


class DropFolderSource(_Source):
    """A directory watched for new files."""

    kind: Literal["dropfolder"] = "dropfolder"
    path: Path
    format: Literal["auto", "seed", "json", "jsonl", "newsml", "nitf", "feed"] = "auto"
    interval: Duration = 2.0
    # Where files go once published; relative to ``path`` unless absolute.
    processed: Path = Path("processed")
    error: Path = Path("error")
    # The source name stamped on deliveries that do not name one (default: the source's name).
    source: str | None = None
    # A file is published once its size and mtime were the same in two scans this far apart and
    # it was last modified at least ``settle`` ago: a writer that pauses between creating a file
    # and filling it (a copy on a loaded machine, a slow network share) is not read half-way
    # through. Names matching ``ignore`` (partial uploads) are never picked up.
    settle: Duration = 1.0
    ignore: list[str] = Field(
        default_factory=lambda: [
            ".*",
            "*.tmp",
            "*.part",
            "*.partial",
            "*~",
            "*.crdownload",
            "*.filepart",
            "*.reason.txt",
        ]
    )


class PushSource(_Source):
    """The HTTP push endpoint (``akhbar serve``)."""

    kind: Literal["push"] = "push"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Sender name -> bearer token. The sender name is the default source of what it pushes.
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    # A file of ``name:token`` lines (or bare tokens, named "push"), read at start.
    tokens_file: Path | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Most deliveries one request may carry (a larger batch is refused with 413).
    max_batch: int = Field(default=1000, ge=1)
    # Backpressure: above this many queued messages, requests get 429 with Retry-After.
    max_queue_depth: int = Field(default=10_000, ge=1)
    retry_after: int = Field(default=5, ge=1)


SourceConfig = Annotated[FeedSource | DropFolderSource | PushSource, Field(discriminator="kind")]


class SourcesConfig(BaseModel):
    """The whole of ``sources.toml``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sources: list[SourceConfig] = Field(default_factory=list, alias="source")
    # Feed polls run on this many threads (fetching is I/O bound; publishing stays serialized).
    fetch_threads: int = Field(default=4, ge=1, le=64)

    @field_validator("sources", mode="before")
    @classmethod
    def _kind_aliases(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                {**v, "kind": "feed"} if isinstance(v, dict) and v.get("kind") in ("rss", "atom") else v
                for v in value
            ]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)}")
        return self

    def resolve(self, base: Path) -> SourcesConfig:
        """Relative paths made absolute against ``base`` (the directory of the config file)."""
        resolved: list[FeedSource | DropFolderSource | PushSource] = []
        for src in self.sources:
            if isinstance(src, DropFolderSource):
                path = src.path if src.path.is_absolute() else base / src.path
                src = src.model_copy(update={"path": path.resolve()})
            elif isinstance(src, PushSource) and src.tokens_file and not src.tokens_file.is_absolute():
                src = src.model_copy(update={"tokens_file": (base / src.tokens_file).resolve()})
            resolved.append(src)
        return self.model_copy(update={"sources": resolved})


def load_config(path: str | Path) -> SourcesConfig:
    """Read and validate ``sources.toml`` (raises ``pydantic.ValidationError`` or ``TOMLDecodeError``)."""
    path = Path(path)
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return SourcesConfig.model_validate(data).resolve(path.resolve().parent)


# --- what running sources share -------------------------------------------------------------

STATES = ("active", "quiet", "disabled")


@dataclass
class SourceStatus:
    """The health of one source, kept by the source while it runs and saved by a :class:`HealthStore`."""

    name: str
    kind: str
    state: str = "active"
    last_seen: datetime | None = None  # when the source last gave a new item
    last_poll: datetime | None = None
    next_poll: datetime | None = None
    items: int = 0  # items published, all time
    failures: int = 0  # failed polls / files / requests, all time
    consecutive_failures: int = 0
    failure_score: float = 0.0
    etag: str | None = None
    last_modified: str | None = None
    last_error: str | None = None
    # Kind-specific state that survives restarts (a feed's recently seen item ids).
    cursor: dict[str, Any] = field(default_factory=dict)


class HealthStore(Protocol):
    """Where source health is kept between polls and across restarts."""

    def load(self, name: str) -> SourceStatus | None: ...

    def save(self, status: SourceStatus) -> None: ...


class MemoryHealth:
    """A :class:`HealthStore` in memory (tests, and runs without a database)."""

    def __init__(self) -> None:
        self.statuses: dict[str, SourceStatus] = {}

    def load(self, name: str) -> SourceStatus | None:
        return self.statuses.get(name)

    def save(self, status: SourceStatus) -> None:
        self.statuses[status.name] = status


class Publishing(Protocol):
    """The part of :class:`producers.publish.Publisher` that sources use."""

    def publish(
        self, items: Iterable[Delivery | Rejection], *, live: bool = False, run_id: str | None = None
    ) -> list[str]: ...

    def queue_depth(self) -> int: ...
