"""Drop folder: publish-then-move, stability of half-written files, restarts, broker outages."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest
from feedtools import RecordingPublisher
from structlog.testing import capture_logs

from akhbar.settings import Settings
from producers.config import DropFolderSource, MemoryHealth
from producers.dropfolder import DropFolder
from worker.messages import Delivery

DATA = Path(__file__).parent / "data"
SEED = Path(__file__).resolve().parents[2] / "seeds" / "000_7b75cc1a696a820f.txt"
SETTINGS = Settings(max_delivery_bytes=64 * 1024)


class Crash(BaseException):
    """The producer process dying: not an error a source handles."""


def folder(tmp_path: Path, publisher: object, health: MemoryHealth | None = None, **kw: object) -> DropFolder:
    kw.setdefault("settle", 0)  # files written by the tests are complete when scanned
    config = DropFolderSource(name="drop", path=tmp_path / "in", interval=0.01, **kw)  # type: ignore[arg-type]
    return DropFolder(config, publisher, settings=SETTINGS, health=health)  # type: ignore[arg-type]


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def test_every_kind_of_file_is_published_then_moved(tmp_path: Path, recorder: RecordingPublisher) -> None:
    drop = folder(tmp_path, recorder)
    inbox = drop.path
    shutil.copy(SEED, inbox / SEED.name)
    (inbox / "one.json").write_bytes(orjson.dumps({"id": "j1", "body": "نص الخبر", "title": "عنوان"}))
    (inbox / "many.jsonl").write_bytes(
        b'{"id": "l1", "body": "first"}\n\n{"id": "l2", "body": ""}\nnot json\n'
    )
    shutil.copy(DATA / "newsml_v1.xml", inbox / "newsml_v1.xml")
    shutil.copy(DATA / "nitf_v2.xml", inbox / "story.nitf")
    (inbox / "garbage.xml").write_bytes(b"<nitf><head>")
    (inbox / "upload.xml.part").write_bytes(b"<nitf>")

    first = drop.scan()
    assert first.published == [] and recorder.calls == []  # nothing is stable yet
    with capture_logs() as logs:
        second = drop.scan()

    assert second.published == sorted([SEED.name, "one.json", "many.jsonl", "newsml_v1.xml", "story.nitf"])
    assert second.failed == ["garbage.xml"]
    assert files(inbox) == ["upload.xml.part"]  # a partial upload is never picked up
    assert files(drop.processed_dir) == sorted([*second.published, "many.jsonl.reason.txt"])
    assert files(drop.error_dir) == ["garbage.xml", "garbage.xml.reason.txt"]
    assert (drop.error_dir / "garbage.xml.reason.txt").read_text().startswith("invalid_xml: ")
    reasons = (drop.processed_dir / "many.jsonl.reason.txt").read_text().splitlines()
    assert [r.split(":")[0] for r in reasons] == ["empty_body", "invalid_json"]

    ids = sorted(d.id for d in recorder.deliveries)
    assert ids == sorted(
        [
            SEED.stem,
            "j1",
            "l1",
            "urn:newsml:wire.example:20190212:baghouz-families:1",
            "baghouz-families-20190212:2",
        ]
    )
    assert {d.source for d in recorder.deliveries} == {"drop"}
    assert all(live for _, live in recorder.calls)
    assert sorted(r.code for r in recorder.rejections) == ["empty_body", "invalid_json", "invalid_xml"]
    assert len(second.delivery_ids) == len(recorder.items) == 8
    events = [e for e in logs if e["event"] == "file_published"]
    assert len(events) == 6 and all(e["source"] == "drop" for e in events)
    assert drop.status.items == 5 and drop.status.failures == 1


def test_half_written_file_waits_until_it_stops_changing(
    tmp_path: Path, recorder: RecordingPublisher
) -> None:
    drop = folder(tmp_path, recorder)
    target = drop.path / "story.json"
    with target.open("wb") as fh:
        fh.write(b'{"id": "growing", "body": "')
        fh.flush()
        assert drop.scan().waiting == ["story.json"]
        fh.write("نص طويل يكتب على دفعات".encode())
        fh.flush()
        report = drop.scan()  # changed since the last scan: still waiting
        assert report.waiting == ["story.json"] and report.published == []
        fh.write(b'"}')
    drop.scan()
    report = drop.scan()
    assert report.published == ["story.json"]
    (delivery,) = recorder.deliveries
    assert delivery.id == "growing" and delivery.body == "نص طويل يكتب على دفعات"
    assert recorder.rejections == []


def test_a_file_created_and_not_yet_written_waits_for_the_settle_time(
    tmp_path: Path, recorder: RecordingPublisher
) -> None:
    """A copy that pauses between creating the file and writing it (a loaded machine) looks the
    same in two scans: the file is taken only once it has not changed for ``settle`` seconds."""
    drop = folder(tmp_path, recorder, settle=60)
    target = drop.path / "story.json"
    target.touch()  # created, not yet written: the same size and mtime in every scan
    for _ in range(3):
        report = drop.scan()
        assert report.waiting == ["story.json"] and report.published == report.failed == []
    target.write_text('{"id": "copied", "body": "نص كامل"}', encoding="utf-8")
    assert drop.scan().waiting == ["story.json"]
    an_hour_ago = time.time() - 3600
    os.utime(target, (an_hour_ago, an_hour_ago))  # as it is once the settle time has passed
    drop.scan()
    assert drop.scan().published == ["story.json"]
    assert [d.id for d in recorder.deliveries] == ["copied"] and recorder.rejections == []


def test_a_failed_publish_leaves_the_file_for_the_next_scan(
    tmp_path: Path, recorder: RecordingPublisher
) -> None:
    drop = folder(tmp_path, recorder)
    shutil.copy(SEED, drop.path / SEED.name)
    recorder.fail_next = 1
    drop.scan()
    with capture_logs() as logs:
        report = drop.scan()
    assert report.retry == [SEED.name] and files(drop.path) == [SEED.name]
    assert files(drop.processed_dir) == [] and recorder.calls == []
    assert [e["event"] for e in logs] == ["file_publish_failed", "dropfolder_scanned"]
    assert drop.status.failures == 1 and "broker unavailable" in (drop.status.last_error or "")
    drop.scan()  # the file is new again after a retry: it must be seen stable once more
    report = drop.scan()
    assert report.published == [SEED.name] and files(drop.processed_dir) == [SEED.name]
    assert [d.id for d in recorder.deliveries] == [SEED.stem]


def test_restart_mid_batch_neither_loses_nor_republishes(
    tmp_path: Path, recorder: RecordingPublisher
) -> None:
    health = MemoryHealth()
    drop = folder(tmp_path, recorder, health=health)
    for n in range(5):
        (drop.path / f"{n}.json").write_bytes(orjson.dumps({"id": f"s{n}", "body": f"story {n}"}))
    drop.scan()

    class DiesOnThird(RecordingPublisher):
        def publish(self, items, *, live=False, run_id=None):  # type: ignore[no-untyped-def]
            if len(self.calls) == 2:
                raise Crash()
            return super().publish(items, live=live, run_id=run_id)

    dying = DiesOnThird()
    drop.publisher = dying
    with pytest.raises(Crash):
        drop.scan()
    assert files(drop.processed_dir) == ["0.json", "1.json"]
    (drop.path / "5.json").write_bytes(orjson.dumps({"id": "s5", "body": "written while down"}))

    # A new process over the same folder.
    restarted = folder(tmp_path, recorder, health=health)
    restarted.scan()
    report = restarted.scan()
    assert report.published == ["2.json", "3.json", "4.json", "5.json"]
    published = [d.id for d in dying.deliveries] + [d.id for d in recorder.deliveries]
    assert sorted(published) == [f"s{n}" for n in range(6)]  # each exactly once
    assert files(restarted.path) == []
    assert health.statuses["drop"].items == 6 and health.statuses["drop"].last_seen is not None


def test_crash_between_publish_and_move_does_not_republish(
    tmp_path: Path, recorder: RecordingPublisher
) -> None:
    class DiesBeforeMove(DropFolder):
        def _move(self, path, outcome, reasons):  # type: ignore[no-untyped-def]
            raise Crash()

    config = DropFolderSource(name="drop", path=tmp_path / "in", interval=0.01, settle=0)
    dying = DiesBeforeMove(config, recorder, settings=SETTINGS)
    shutil.copy(DATA / "nitf_v1.xml", config.path / "a.xml")
    dying.scan()
    with pytest.raises(Crash):
        dying.scan()
    assert len(recorder.deliveries) == 1 and files(config.path) == ["a.xml"]

    restarted = DropFolder(config, recorder, settings=SETTINGS)
    restarted.scan()
    with capture_logs() as logs:
        report = restarted.scan()
    assert report.published == ["a.xml"] and files(restarted.processed_dir) == ["a.xml"]
    assert len(recorder.deliveries) == 1  # moved, not published again
    assert any(e["event"] == "file_already_published" for e in logs)
    assert not list((config.path / ".akhbar").iterdir())


def test_same_name_dropped_twice_keeps_both(tmp_path: Path, recorder: RecordingPublisher) -> None:
    drop = folder(tmp_path, recorder)
    for version in ("nitf_v1.xml", "nitf_v2.xml"):
        shutil.copy(DATA / version, drop.path / "story.xml")
        drop.scan()
        assert drop.scan().published == ["story.xml"]
    kept = files(drop.processed_dir)
    assert len(kept) == 2 and "story.xml" in kept
    assert [d.id for d in recorder.deliveries] == [
        "baghouz-families-20190212:1",
        "baghouz-families-20190212:2",
    ]
    assert all(isinstance(d, Delivery) and d.format == "nitf" for d in recorder.deliveries)


def test_empty_file_is_kept_as_a_rejection(tmp_path: Path, recorder: RecordingPublisher) -> None:
    drop = folder(tmp_path, recorder, format="jsonl")
    (drop.path / "empty.jsonl").write_bytes(b"\n\n")
    drop.scan()
    assert drop.scan().failed == ["empty.jsonl"]
    assert [r.code for r in recorder.rejections] == ["empty_file"]


def test_gzip_files_long_lines_and_bombs(tmp_path: Path, recorder: RecordingPublisher) -> None:
    import gzip

    drop = folder(tmp_path, recorder)
    lines = [orjson.dumps({"id": f"g{n}", "body": f"story {n}"}) for n in range(3)]
    (drop.path / "batch.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    # One endless line between two good ones: rejected as too large, never held whole.
    endless = b'{"id": "huge", "body": "' + b"x" * (3 * SETTINGS.max_delivery_bytes) + b'"}'
    (drop.path / "long.jsonl").write_bytes(lines[0] + b"\n" + endless + b"\n" + lines[1] + b"\n")
    (drop.path / "bomb.json.gz").write_bytes(
        gzip.compress(b'{"id": "b", "body": "' + b" " * 50_000_000 + b'"}')
    )
    (drop.path / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    drop.scan()
    report = drop.scan()
    assert report.published == ["batch.jsonl.gz", "long.jsonl"]
    assert report.failed == ["bomb.json.gz", "corrupt.jsonl.gz"]
    assert sorted(d.id for d in recorder.deliveries) == ["g0", "g0", "g1", "g1", "g2"]
    codes = {r.source_id or r.code: r.code for r in recorder.rejections}
    assert sorted(r.code for r in recorder.rejections) == ["invalid_gzip", "too_large", "too_large"]
    too_large = [r for r in recorder.rejections if r.code == "too_large"]
    assert all(len(r.raw) <= SETTINGS.max_delivery_bytes for r in too_large), codes
