"""Embedded mode's precomputer (worker/precompute.py): work done ahead in a second process must be
exactly the work the pipeline would do, used only for the record it was computed from, bounded, and
never needed: whatever goes wrong, the worker computes it itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.records import build_delivery
from tests.conftest import read_corpus
from worker import precompute
from worker.messages import Delivery, DeliveryMessage, new_delivery_id

ROOT = Path(__file__).resolve().parent.parent


def finished(pc: Any) -> None:
    """Wait until every submitted batch is computed (a batch still queued when the worker asks
    for it is left to the worker: see Precomputer.take)."""
    for batch in list(pc._batches.values()):
        batch.future.result(timeout=60)


def messages(rows: list[dict[str, Any]]) -> list[DeliveryMessage]:
    out = []
    for row in rows:
        fields = {"id": row["id"], "title": row["title"], "body": row["body"], "url": row["url"],
                  "source": row["id"].split("/")[2] if row["id"].startswith("saudinewsnet/") else "sanad",
                  "published_at": row["date"]}
        record = build_delivery(fields, default_source="corpus", raw=orjson.dumps(fields))
        assert isinstance(record, Delivery), record
        out.append(DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                                   correlation_id="test", record=record))
    return out


@pytest.fixture(scope="module")
def sample() -> list[DeliveryMessage]:
    rows = [r for r in read_corpus(6000)[::20] if r["body"].strip()]  # outlets, lengths, SANAD too
    return messages(rows)


@pytest.fixture
def pool() -> Any:
    pc = precompute.Precomputer(ahead=100)
    yield pc
    pc.close()


def test_the_work_is_the_pipelines_own(pool: Any, sample: list[DeliveryMessage]) -> None:
    for start in range(0, len(sample), 50):
        pool.submit(sample[start:start + 50])
    finished(pool)
    for msg in sample:
        assert msg.record is not None
        work = pool.take(msg.delivery_id, msg.record)
        assert work is not None
        here = precompute.compute(msg.record)
        assert work.norm == here.norm
        assert work.enrichment == here.enrichment
        assert work.signature == here.signature
    assert pool.taken == len(sample) and pool.missed == 0


def test_work_is_only_given_for_the_record_it_was_computed_from(pool: Any,
                                                                 sample: list[DeliveryMessage]) -> None:
    first, second, third = sample[:3]
    pool.submit([first, second, third])
    finished(pool)
    assert first.record is not None and second.record is not None
    changed = first.record.model_copy(update={"title": (first.record.title or "") + " ‫"})
    assert pool.take(first.delivery_id, changed) is None  # the worker's checks changed the text
    assert pool.take(new_delivery_id(), second.record) is None  # never submitted
    assert pool.take(second.delivery_id, second.record) is not None
    assert pool.missed == 2


def test_a_batch_still_queued_is_left_to_the_worker(pool: Any, sample: list[DeliveryMessage]) -> None:
    for start in range(0, 250, 50):
        pool.submit(sample[start:start + 50])
    last = sample[249]
    assert last.record is not None
    # Four batches are ahead of it in the pool: the worker computes it rather than wait.
    assert pool.take(last.delivery_id, last.record) is None
    assert pool.take(sample[248].delivery_id, sample[248].record) is None  # its batch was given up
    assert len(pool._batches) == 4 and pool.dropped == 49


def test_a_failure_in_the_work_is_left_to_the_worker(monkeypatch: pytest.MonkeyPatch,
                                                     sample: list[DeliveryMessage]) -> None:
    real = precompute._compute

    def flaky(title: str | None, *args: Any) -> Any:
        if title == "boom":
            raise RuntimeError("boom")
        return real(title, *args)

    monkeypatch.setattr(precompute, "_compute", flaky)  # before the fork: the pool process has it
    pc = precompute.Precomputer()
    try:
        good = sample[0]
        assert good.record is not None
        bad = good.model_copy(update={"delivery_id": new_delivery_id(),
                                      "record": good.record.model_copy(update={"title": "boom"})})
        pc.submit([good, bad])
        finished(pc)
        assert bad.record is not None
        assert pc.take(bad.delivery_id, bad.record) is None
        assert pc.take(good.delivery_id, good.record) is not None
        assert not pc.broken
    finally:
        pc.close()


def test_room_ahead_is_bounded(monkeypatch: pytest.MonkeyPatch, sample: list[DeliveryMessage]) -> None:
    """Results the worker never asks for (deliveries it skipped) are dropped when room is needed;
    the producer is never stuck behind them."""
    monkeypatch.setattr(precompute, "ROOM_WAIT", 0.2)
    pc = precompute.Precomputer(ahead=2)
    try:
        for start in range(0, 40, 10):
            pc.submit(sample[start:start + 10])
        assert len(pc._batches) == 2 and pc.dropped == 20
        finished(pc)
        last = sample[39]
        assert last.record is not None
        assert pc.take(last.delivery_id, last.record) is not None
        assert pc.take(sample[0].delivery_id, sample[0].record) is None  # type: ignore[arg-type]
    finally:
        pc.close()


# When a pool process dies, CPython 3.11's executor thread may raise InvalidStateError while it
# fails a future this side had cancelled (a race inside concurrent.futures); the executor is
# abandoned either way, which is what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_pool_process_is_not_used_again(sample: list[DeliveryMessage]) -> None:
    pc = precompute.Precomputer()
    try:
        (child,) = list(pc._pool._processes.values())
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        deadline = time.monotonic() + 30
        for msg in sample:
            assert msg.record is not None
            pc.submit([msg])
            assert pc.take(msg.delivery_id, msg.record) is None  # the worker computes it
            if pc.broken or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert pc.broken
        pc.submit(sample[:3])  # no longer sent anywhere
        assert not pc._batches
    finally:
        pc.close()


def _replay(cwd: Path, path: Path, precomputed: bool) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env.update({"AKHBAR_EMBEDDED_PRECOMPUTE": str(precomputed).lower(), "AKHBAR_LOG_FORMAT": "json"})
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "akhbar.cli", "replay", str(path), "--json"], cwd=cwd,
                          env=env, capture_output=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    closed = [json.loads(line) for line in done.stderr.splitlines() if b"precompute_closed" in line]
    if precomputed:
        assert closed and closed[0]["taken"] > 0.9 * len(path.read_bytes().splitlines()), closed
    else:
        assert not closed
    export = subprocess.run([sys.executable, "-m", "akhbar.cli", "export"], cwd=cwd, env=env,
                            capture_output=True, timeout=300, check=True)
    return [json.loads(line) for line in export.stdout.splitlines()]


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export with its run-specific ids and times replaced by row positions."""
    position = {r["delivery_id"]: i for i, r in enumerate(rows)}
    first: dict[Any, int] = {}
    out = []
    for i, r in enumerate(rows):
        row = {k: v for k, v in r.items()
               if k not in ("delivery_id", "story_id", "duplicate_of", "received_at", "processed_at",
                            "story_versions")}
        row["story"] = first.setdefault(r["story_id"], i) if r["story_id"] is not None else None
        row["duplicate_of"] = position.get(r["duplicate_of"])
        row["versions"] = [(v["version"], position.get(v["delivery_id"]), v["title"], v["changes"])
                           for v in r.get("story_versions") or []]
        out.append(row)
    return out


@pytest.mark.slow
def test_embedded_replay_stores_the_same_with_and_without_it(tmp_path: Path) -> None:
    """1,500 corpus records (same-day reprints, updates, exact duplicates, a bidi-marked headline the
    worker's checks rewrite): the same export, row for row, with the work done ahead or not."""
    rows = read_corpus(1500)
    records = [{"id": r["id"], "title": r["title"], "body": r["body"], "url": r["url"],
                "source": r["id"].split("/")[2], "published_at": r["date"]} for r in rows]
    records += records[:10]  # re-sends
    records.append(dict(records[20], id="bidi-1", title="‫" + (records[20]["title"] or "") + "‬"))
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    ahead = _comparable(_replay(tmp_path / "ahead", path, True))
    alone = _comparable(_replay(tmp_path / "alone", path, False))
    assert len(ahead) == len(records)
    assert {r["status"] for r in ahead} >= {"new", "duplicate", "near_duplicate"}
    assert ahead == alone
