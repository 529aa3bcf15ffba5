"""Near-duplicates in the embedded mode: the in-process index, and ``akhbar replay`` without Redis.

The in-process index (:mod:`worker.neardup.local`) must give the answers of the shared Redis index,
which is checked against it on real corpus articles; an embedded replay (a SQLite file, no
AKHBAR_REDIS_URL) then finds reprints and updates, and a second replay process, whose index is
rebuilt from the signatures stored in SQLite, still finds them against the stored stories.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from bench import corpus_variants as cv
from tests.conftest import read_corpus
from worker.neardup import IndexLost, NearDupIndex, RebuildInProgress, Signature, signature
from worker.neardup.local import LocalNearDupIndex
from worker.stages.normalize import normalize

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _sig(title: str | None, body: str, at: datetime, source: str = "spa") -> Signature:
    n = normalize(title=title, body=body)
    return signature(match_title=n.match_title, match_body=n.match_body, published_at=at, source=source)


@pytest.fixture(scope="module")
def articles() -> list[dict]:
    """Long SaudiNewsNet articles with a headline and at least five paragraphs."""
    rows = [r for r in read_corpus(9000)[6000:] if r["source_dataset"] == "SaudiNewsNet" and r["title"]]
    rows = [r for r in rows if len(r["body"].split()) >= 150 and len(cv._paras(r["body"])) >= 5]
    random.Random(11).shuffle(rows)
    assert len(rows) >= 40
    return rows[:40]


def _edited(article: dict, seed: int) -> tuple[str, str]:
    """A reprint with small edits: a reworded headline, typos, another dateline."""
    rnd = random.Random(seed)
    paragraphs = cv.dateline_edit(cv.typo_edit(cv._paras(article["body"]), rnd, 2), rnd)
    return cv.reword_title(article["title"], rnd), "\n\n".join(paragraphs)


# -- the index itself ------------------------------------------------------------------------------


@pytest.fixture
def shared(redis_url: str, redis_prefix: str) -> Iterator[NearDupIndex]:
    idx = NearDupIndex(redis.Redis.from_url(redis_url), f"{redis_prefix}:h5-{uuid.uuid4().hex[:8]}",
                       expected_stories=1000, max_candidates=5)
    idx.ensure()
    yield idx
    idx.drop()


def _answers(results: list) -> list[list[tuple[str, int, int, bytes]]]:
    return [_found(res.candidates) for res in results]


def _found(candidates: list) -> list[tuple[str, int, int, bytes]]:
    return [(c.ref, c.band_hits, c.seq, c.signature.to_bytes()) for c in candidates]


def test_same_candidates_as_the_redis_index(shared: NearDupIndex, articles: list[dict]) -> None:
    """Stories, reprints, verbatim copies (ties the candidate cut must break the same way), a
    redelivery, and times weeks apart (other epochs, outside the window): every answer the same."""
    local = LocalNearDupIndex(max_candidates=5)
    local.ensure()
    stories: list[tuple[str, Signature]] = []
    for i, art in enumerate(articles[:20]):
        at = T0 + timedelta(days=(i % 5) * 6, minutes=i)
        stories.append((f"o{i}", _sig(art["title"], art["body"], at)))
        if i % 2 == 0:
            title, body = _edited(art, i)
            stories.append((f"r{i}", _sig(title, body, at + timedelta(hours=3), "okaz")))
        if i % 5 == 0:
            for k in range(8):  # the same text again and again: many candidates with equal band hits
                stories.append((f"c{i}-{k}", _sig(art["title"], art["body"], at + timedelta(minutes=k))))
    stories.append(("o3", stories[3][1]))  # a redelivery leaves itself out
    rnd = random.Random(3)
    pos, matched = 0, 0
    while pos < len(stories):
        size = rnd.randint(1, 6)
        chunk = stories[pos : pos + size]
        expected = _answers(shared.lookup_and_add_many(chunk))
        assert _answers(local.lookup_and_add_many(chunk)) == expected
        matched += sum(1 for answer in expected if answer)
        pos += size
    assert matched >= 30  # the comparison covered stories that had candidates
    probe = _sig(articles[4]["title"], articles[4]["body"], T0 + timedelta(days=24, hours=5))
    assert _found(local.candidates(probe)) == _found(shared.candidates(probe))


def test_window_expiry_and_publication_window(articles: list[dict]) -> None:
    now = [1000.0]
    index = LocalNearDupIndex(window_days=7, clock=lambda: now[0])
    index.ensure()
    art = articles[0]
    index.add("a", _sig(art["title"], art["body"], T0))
    # Published 40 days later: beyond the window (and the next epoch), nothing is proposed.
    assert index.candidates(_sig(art["title"], art["body"], T0 + timedelta(days=40))) == []
    near = _sig(art["title"], art["body"], T0 + timedelta(days=2))
    assert [c.ref for c in index.candidates(near)] == ["a"]
    now[0] += 3 * 7 * 86400 - 1  # three windows after the last write, not yet
    assert [c.ref for c in index.candidates(near)] == ["a"]
    now[0] += 2
    assert index.candidates(near) == []
    assert len(index) == 0


def test_absent_until_rebuilt_and_one_rebuild_at_a_time(articles: list[dict]) -> None:
    index = LocalNearDupIndex()
    sigs = [(f"s{i}", _sig(a["title"], a["body"], T0)) for i, a in enumerate(articles[:5])]
    assert not index.present()
    with pytest.raises(IndexLost):
        index.lookup_and_add_many(sigs[:1])

    reading, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_items() -> Iterator[tuple[str, Signature]]:
        yield sigs[0]
        reading.set()
        release.wait(10)
        yield from sigs[1:]

    def first() -> None:
        try:
            index.rebuild(slow_items())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert reading.wait(10)
    with pytest.raises(RebuildInProgress):
        index.rebuild(iter(sigs))
    with pytest.raises(IndexLost):  # half loaded: absent, not empty
        index.candidates(sigs[0][1])
    release.set()
    thread.join(10)
    assert not errors
    assert index.present() and len(index) == 5
    generation = index.generation()
    found = index.lookup_and_add("again", sigs[2][1])
    assert [c.ref for c in found.candidates] == ["s2"] and found.generation == generation


def test_threads_adding_the_same_story_each_find_every_earlier_one(articles: list[dict]) -> None:
    index = LocalNearDupIndex(max_candidates=64)
    index.ensure()
    art = articles[1]
    sig = _sig(art["title"], art["body"], T0)
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for k in range(5):
            ref = f"t{n}-{k}"
            results[ref] = [c.ref for c in index.lookup_and_add(ref, sig).candidates]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Lookup and insertion are one step: ordered by how many they found, the k-th saw the k before it.
    ordered = sorted(results.items(), key=lambda kv: len(kv[1]))
    assert [len(found) for _, found in ordered] == list(range(40))
    for k, (_ref, found) in enumerate(ordered):
        assert set(found) == {ref for ref, _ in ordered[:k]}


# -- akhbar replay, embedded -----------------------------------------------------------------------


def _replay(cwd: Path, db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    env["AKHBAR_DATABASE_URL"] = f"sqlite:///{db}"
    return subprocess.run([sys.executable, "-m", "akhbar.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=300, check=False)


def _record(sid: str, source: str, title: str, paragraphs: list[str] | str, at: datetime) -> dict:
    body = paragraphs if isinstance(paragraphs, str) else "\n\n".join(paragraphs)
    return {"id": sid, "source": source, "title": title, "body": body, "published_at": at.isoformat()}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.slow
def test_embedded_replay_finds_reprints_and_updates_across_processes(tmp_path: Path,
                                                                      articles: list[dict]) -> None:
    story, other = articles[2], articles[3]
    paragraphs = cv._paras(story["body"])
    short = paragraphs[:-2]
    rnd = random.Random(5)
    reprint = cv.dateline_edit(cv.typo_edit(short, rnd, 2), rnd)
    db = tmp_path / "embedded.db"
    first = _write(tmp_path / "first.jsonl", [
        _record("spa-1", "spa", story["title"], short, T0),
        _record("other-1", "spa", other["title"], cv._paras(other["body"]), T0),
        _record("okaz-1", "okaz", story["title"], reprint, T0 + timedelta(minutes=40)),
        _record("spa-2", "spa", story["title"], paragraphs, T0 + timedelta(minutes=90)),
    ])
    run = _replay(tmp_path, db, "replay", str(first), "--json")
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    summary = json.loads(run.stdout)
    assert {k: summary[k] for k in ("received", "new", "duplicate", "near_duplicate", "update")} == {
        "received": 4, "new": 2, "duplicate": 0, "near_duplicate": 1, "update": 1}

    rows = _export(tmp_path, db)  # in receipt order: that of the file
    assert [(r["source"], r["status"], r["version"]) for r in rows] == [
        ("spa", "new", 1), ("spa", "new", 1), ("okaz", "near_duplicate", 1), ("spa", "update", 2)]
    original, unrelated, near, update = rows
    assert near["story_id"] == update["story_id"] == original["story_id"] != unrelated["story_id"]
    assert near["duplicate_of"] == original["delivery_id"]
    assert update["duplicate_of"] in {original["delivery_id"], near["delivery_id"]}
    shown = _show(tmp_path, db, original["story_id"])
    assert shown["version"] == 2 and [v["version"] for v in shown["versions"]] == [1, 2]
    assert len(shown["versions"][1]["changes"]["paragraphs_added"]) == 2
    assert shown["versions"][1]["changes"]["paragraphs_removed"] == []
    assert len(shown["deliveries"]) == 3

    # A new process: its index starts absent and is rebuilt from the signatures in SQLite.
    title, body = _edited(story, 9)
    second = _write(tmp_path / "second.jsonl", [
        _record("alriyadh-1", "alriyadh", title, body, T0 + timedelta(hours=5)),
    ])
    run = _replay(tmp_path, db, "replay", str(second), "--json")
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    summary = json.loads(run.stdout)
    assert (summary["received"], summary["new"], summary["near_duplicate"]) == (1, 0, 1)
    latest = _export(tmp_path, db)[-1]
    assert (latest["source"], latest["status"], latest["story_id"], latest["version"]) == (
        "alriyadh", "near_duplicate", original["story_id"], 2)
    assert len(_show(tmp_path, db, original["story_id"])["deliveries"]) == 4


def _export(cwd: Path, db: Path) -> list[dict]:
    run = _replay(cwd, db, "export")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return [json.loads(line) for line in run.stdout.decode().splitlines()]


def _show(cwd: Path, db: Path, story_id: int) -> dict:
    run = _replay(cwd, db, "stories", "show", str(story_id), "--json")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return json.loads(run.stdout)
