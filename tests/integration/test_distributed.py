"""End to end with real parts: producer -> Redis -> two celery worker processes -> PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from models import Delivery, Story
from models.session import session_factory
from producers.records import parse_json_record
from tests.conftest import SEEDS, read_corpus
from tests.integration.conftest import run_akhbar
from worker.messages import Delivery as Record
from worker.stages.normalize import normalize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ARTICLES = 2000
BAD_LINES = [
    b"{not json at all",
    b'{"id": "x1"}',
    b'{"body": "\xd9\x86\xd8\xb5 without id"}',
    b'{"id": "x2", "body": "\xff\xfe broken utf8"}',
    b'{"id": "x3", "body": "nul \x00 inside"}',
    b'{"id": "x4", "body": "   "}',
    b'[1, 2, 3]',
    b'"just a string"',
    b'{"id": "x5", "body": 42}',
    b'{"id": "x6", "body": "ok", "published_at": "not a date"}',
    b'{"id": "x7", "body": "\\ud800 lone surrogate"}',
    b'{"id": "x8", "body": "deep", "x": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"id": {"nested": 1}, "body": "id must be a string"}',
    b'{"id": "x9", "body": "t", "title": ["not", "a", "string"]}',
    b'{"id": "x10", "body": "' + "ن".encode() * 1_500_000 + b'"}',
    b'{"id": "", "body": "empty id"}',
    b'{"id": "x11", "body": null}',
    b'{"id": "x12\xe2\x80\xae", "body": "bidi override in id"}',
    b'{"id": true, "body": "boolean id"}',
    b'{"id": "x13", "body": "url", "url": 5}',
]


def _corpus_jsonl(path: Path, n: int) -> list[dict]:
    rows = []
    for article in read_corpus(n):
        parts = article["id"].split("/")
        source = parts[2] if article["source_dataset"] == "SaudiNewsNet" else article["source_dataset"]
        rows.append({"id": article["id"], "title": article["title"], "body": article["body"],
                     "source": source, "url": article["url"],
                     "published_at": article["date"].replace(" ", "T") if article["date"] else None,
                     "category": article["category"]})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return rows


def _summary(result) -> dict:
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = result.stdout.decode().strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got {lines[:3]}"
    return json.loads(lines[0])


def test_replay_corpus_twice_then_bad_records(workers, akhbar_env, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = _corpus_jsonl(corpus, N_ARTICLES)
    # what the contract says should happen to each line, computed independently of the workers
    hashes, rejected = set(), 0
    for row in rows:
        parsed = parse_json_record(orjson.dumps(row), default_source="corpus", max_bytes=2 << 20,
                                   max_depth=32)
        if isinstance(parsed, Record):
            hashes.add(normalize(title=parsed.title, body=parsed.body).content_hash)
        else:
            rejected += 1
    expected_received = N_ARTICLES + 1

    first = _summary(run_akhbar(akhbar_env, "replay", str(SEEDS), str(corpus), "--json"))
    assert first["received"] == expected_received
    assert first["rejected"] == rejected
    assert (first["new"] + first["near_duplicate"] + first["update"] + first["duplicate"] + rejected
            == expected_received)
    print(f"\nintegration replay: {first['received']} deliveries in {first['seconds']} s "
          f"= {first['stories_per_second']} stories/s with 2 worker processes")

    sessions = session_factory(akhbar_env["AKHBAR_DATABASE_URL"])
    with sessions() as session:
        stored_hashes = session.scalars(
            select(Delivery.content_hash).where(Delivery.status.in_(("new", "near_duplicate", "update")))
        ).all()
        # every distinct match form is stored exactly once: as a story or as a version / near-duplicate of one
        assert len(stored_hashes) == len(set(stored_hashes))
        assert set(stored_hashes) == hashes | {_seed_hash()}
        stories = session.scalar(select(func.count()).select_from(Story))
        assert stories == first["new"]

    second = _summary(run_akhbar(akhbar_env, "replay", str(SEEDS), str(corpus), "--json"))
    assert second["received"] == expected_received
    assert second["duplicate"] == expected_received - rejected
    assert second["new"] == second["near_duplicate"] == second["update"] == 0
    assert second["rejected"] == rejected
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Story)) == stories

    # 20 planted bad records among good ones: exactly those rejected, with reasons, the rest stored
    mixed = tmp_path / "mixed.jsonl"
    good = [orjson.dumps({"id": f"good-{i}", "source": "mixed", "title": f"خبر {i}",
                          "body": f"نص الخبر رقم {i} عن موضوع مختلف تماما {i * 7919}"}) for i in range(60)]
    lines = []
    for i, line in enumerate(good):
        lines.append(line)
        if i % 3 == 0 and i // 3 < len(BAD_LINES):
            lines.append(BAD_LINES[i // 3])
    mixed.write_bytes(b"\n".join(lines) + b"\n")
    third = _summary(run_akhbar(akhbar_env, "replay", str(mixed), "--source", "mixed", "--json"))
    assert third["received"] == 80
    assert third["rejected"] == 20
    # the 60 good records are one template that differs only in two numbers: stored, as stories or
    # as near-duplicates of one another
    assert third["new"] + third["near_duplicate"] + third["update"] == 60
    with sessions() as session:
        errors = session.execute(
            select(Delivery.error, Delivery.raw).where(
                Delivery.run_id == third["run_id"], Delivery.status == "rejected"
            )
        ).all()
    assert len(errors) == 20
    assert all(e["code"] and e["message"] for e, _ in errors)
    assert all(raw for _, raw in errors)  # raw bytes kept
    codes = {e["code"] for e, _ in errors}
    assert {"invalid_json", "missing_id", "missing_body", "invalid_utf8", "nul_bytes", "too_large"} <= codes

    # the export: one line per delivery, in receipt order, every delivery exactly once
    out = tmp_path / "export.jsonl"
    result = run_akhbar(akhbar_env, "export", "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = [row["delivery_id"] for row in exported]
    assert len(ids) == len(set(ids)) == 2 * expected_received + 80
    assert [r["received_at"] for r in exported] == sorted(r["received_at"] for r in exported)


def _seed_hash() -> str:
    from producers.records import parse_seed

    seed = next(SEEDS.glob("*.txt"))
    item = parse_seed(seed.read_bytes(), stem=seed.stem, max_bytes=1 << 20)
    return normalize(title=item.title, body=item.body, format="seed").content_hash
