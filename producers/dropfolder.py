"""A drop folder: every new file in a directory is published, then moved out of the way.

Guarantees:

- A file is picked up only when complete: names of partial uploads (``.*``, ``*.tmp``, ``*.part``
  and the like) are ignored, and a file is read only once its size and modification time were the
  same in two consecutive scans and it has not been modified for ``settle`` seconds (one by
  default): two scans alone can both fall in a pause of the writer, between creating the file
  and writing it.
- A file is moved to ``processed/`` (or ``error/`` when it held no valid delivery, with a
  ``<name>.reason.txt`` beside it) only after the publisher has confirmed every message. If the
  publish fails, the file stays where it is and is tried again on a later scan.
- Restarts neither lose nor re-publish files: files written while the producer was down are
  found by the first scans; a file whose publish was confirmed but whose move was interrupted is
  recognized by a marker written between the two (``.akhbar/<name>.published`` holding the file's
  SHA-256) and moved without being published again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import structlog

from akhbar.settings import Settings, get_settings
from producers.config import DropFolderSource, HealthStore, Publishing, SourceStatus
from producers.formats import parse_file
from worker.messages import Delivery, Rejection

log = structlog.get_logger(__name__)

STATE_DIR = ".akhbar"
HEALTH_EVERY = 60.0  # seconds between health saves of an idle folder


@dataclass
class ScanReport:
    """What one scan did."""

    published: list[str] = field(default_factory=list)  # file names moved to processed/
    failed: list[str] = field(default_factory=list)  # file names moved to error/
    waiting: list[str] = field(default_factory=list)  # seen, not yet stable
    retry: list[str] = field(default_factory=list)  # publish failed; left in place
    delivery_ids: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _free_name(directory: Path, name: str) -> Path:
    """``directory/name``, or a timestamped variant when a file of that name is already there."""
    target = directory / name
    if not target.exists() and not (directory / f"{name}.reason.txt").exists():
        return target
    stem, dot, suffix = name.partition(".")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return directory / f"{stem}.{stamp}{dot}{suffix}"


class DropFolder:
    """Scans one directory; :meth:`scan` is one pass, :meth:`run` scans until stopped."""

    def __init__(
        self,
        config: DropFolderSource,
        publisher: Publishing,
        *,
        settings: Settings | None = None,
        health: HealthStore | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.settings = settings or get_settings()
        self.health = health
        self.path = config.path
        self.processed_dir = (
            config.processed if config.processed.is_absolute() else self.path / config.processed
        )
        self.error_dir = config.error if config.error.is_absolute() else self.path / config.error
        self.state_dir = self.path / STATE_DIR
        for directory in (self.path, self.processed_dir, self.error_dir, self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.source = config.source or config.name
        # name -> (size, mtime_ns) at the previous scan.
        self._signatures: dict[str, tuple[int, int]] = {}
        self._saved_at = float("-inf")
        self.log = log.bind(source=config.name, path=str(self.path))
        self.status = (health.load(config.name) if health else None) or SourceStatus(
            config.name, "dropfolder"
        )

    def _ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.config.ignore)

    def _candidates(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if self._ignored(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found[entry.name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def scan(self) -> ScanReport:
        """One pass: publish and move every file that was stable since the previous pass."""
        report = ScanReport()
        now = datetime.now(UTC)
        current = self._candidates()
        settled = time.time_ns() - int(self.config.settle * 1e9)
        stable = sorted(name for name, sig in current.items()
                        if self._signatures.get(name) == sig and sig[1] <= settled)
        report.waiting = sorted(set(current) - set(stable))
        self._signatures = current
        for name in stable:
            self._process(name, report)
            self._signatures.pop(name, None)
        self.status.last_poll = now
        busy = bool(report.published or report.failed or report.retry)
        if busy:
            self.log.info(
                "dropfolder_scanned",
                published=len(report.published),
                failed=len(report.failed),
                retry=len(report.retry),
                waiting=len(report.waiting),
            )
        # An idle folder scanned every few seconds saves its health once a minute, not every scan.
        if self.health is not None and (busy or time.monotonic() - self._saved_at >= HEALTH_EVERY):
            self.health.save(self.status)
            self._saved_at = time.monotonic()
        return report

    def _process(self, name: str, report: ScanReport) -> None:
        path = self.path / name
        marker = self.state_dir / f"{name}.published"
        try:
            sha = _sha256(path)
        except FileNotFoundError:
            return
        if marker.exists() and orjson.loads(marker.read_bytes()).get("sha256") == sha:
            # Published before a restart interrupted the move: finish the move only.
            recorded = orjson.loads(marker.read_bytes())
            self._move(path, recorded.get("outcome", "processed"), recorded.get("reasons", []))
            marker.unlink(missing_ok=True)
            self.log.info("file_already_published", file=name, sha256=sha)
            (report.published if recorded.get("outcome") == "processed" else report.failed).append(name)
            return
        items: list[Delivery | Rejection] = parse_file(
            path,
            format=self.config.format,
            source=self.source,
            max_bytes=self.settings.max_delivery_bytes,
            max_depth=self.settings.max_json_depth,
        )
        if not items:
            items = [
                Rejection.of(
                    "empty_file",
                    f"{name} holds no delivery",
                    source=self.source,
                    raw=path.read_bytes()[: self.settings.max_delivery_bytes],
                    source_id=name,
                    format=self.config.format,
                )
            ]
        started = time.monotonic()
        try:
            ids = self.publisher.publish(items, live=self.config.live)
        except Exception as exc:  # the broker is down or refused: keep the file, try again later
            self.status.failures += 1
            self.status.last_error = f"publish failed for {name}: {type(exc).__name__}: {exc}"
            self.log.warning("file_publish_failed", file=name, error=str(exc), error_type=type(exc).__name__)
            report.retry.append(name)
            return
        delivered = [i for i in items if isinstance(i, Delivery)]
        rejected = [i for i in items if isinstance(i, Rejection)]
        outcome = "processed" if delivered else "error"
        reasons = [
            f"{r.code}: {r.message}" + (f" (id {r.source_id})" if r.source_id else "") for r in rejected
        ]
        # The marker makes the move idempotent across a crash between publish and move.
        _fsync_write(
            marker,
            orjson.dumps({"sha256": sha, "outcome": outcome, "reasons": reasons, "delivery_ids": len(ids)}),
        )
        moved = self._move(path, outcome, reasons)
        marker.unlink(missing_ok=True)
        report.delivery_ids.extend(ids)
        (report.published if outcome == "processed" else report.failed).append(name)
        self.status.items += len(delivered)
        if delivered:
            self.status.last_seen = datetime.now(UTC)
        if outcome == "error":
            self.status.failures += 1
            self.status.last_error = f"{name}: {reasons[0] if reasons else 'no delivery'}"
        self.log.info(
            "file_published",
            file=name,
            outcome=outcome,
            deliveries=len(delivered),
            rejections=len(rejected),
            moved_to=str(moved),
            format=self.config.format,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _move(self, path: Path, outcome: str, reasons: list[str]) -> Path:
        directory = self.processed_dir if outcome == "processed" else self.error_dir
        target = _free_name(directory, path.name)
        if reasons:
            # The reason file is written first, so a file in error/ never lacks its reason.
            _fsync_write(
                target.with_name(target.name + ".reason.txt"), ("\n".join(reasons) + "\n").encode("utf-8")
            )
        os.replace(path, target)
        return target

    def run(self, stop: threading.Event) -> None:
        """Scan every ``interval`` seconds until ``stop`` is set."""
        self.log.info("dropfolder_started", interval=self.config.interval)
        while not stop.is_set():
            try:
                self.scan()
            except OSError as exc:
                self.status.failures += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                self.log.error("dropfolder_scan_failed", error=str(exc))
            stop.wait(self.config.interval)
        self.log.info("dropfolder_stopped")
