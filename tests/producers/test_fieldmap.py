"""``akhbar replay --map``: contract fields taken from other keys of a record."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from producers.fieldmap import FieldMap, FieldRule
from producers.records import parse_json_record
from tests.conftest import read_corpus
from worker.messages import Delivery, Rejection

ROOT = Path(__file__).resolve().parents[2]
CORPUS_MAP = ["published_at=date", "source=id:^saudinewsnet/[^/]+/([^/]+)/"]


def parsed(record: dict[str, object]) -> Delivery | Rejection:
    return parse_json_record(orjson.dumps(record), default_source="articles", max_bytes=1 << 20, max_depth=64)


def test_corpus_records_get_their_outlet_and_time() -> None:
    mapping = FieldMap.parse(CORPUS_MAP)
    rows = read_corpus(3000)[::60]  # the corpus runs outlet by outlet: one in 60 spans several
    for row in rows:
        before = parsed(row)
        assert isinstance(before, Delivery)
        # Without the mapping the outlet and the time are lost: every record is from "articles".
        assert before.source == "articles" and before.published_at is None
        after = mapping.apply(before)
        assert isinstance(after, Delivery)
        outlet = row["id"].split("/")[2]
        assert after.source == outlet
        assert after.published_at == datetime.fromisoformat(row["date"])
        # Everything else as it was; the keys the contract does not name are still kept.
        kept = ("id", "body", "title", "url", "extra")
        assert [getattr(after, k) for k in kept] == [getattr(before, k) for k in kept]
    assert len({mapping.apply(parsed(r)).source for r in rows}) > 1  # type: ignore[union-attr]


def test_a_rule_that_gives_nothing_leaves_the_field_alone() -> None:
    mapping = FieldMap.parse(["source=id:^saudinewsnet/[^/]+/([^/]+)/", "published_at=date"])
    item = parsed({"id": "sanad/alkhaleej/12", "body": "نص الخبر", "source": "alkhaleej", "date": None})
    assert mapping.apply(item) == item  # no match, and no date: nothing to map


def test_rules_read_the_record_as_it_arrived() -> None:
    # The second rule reads the original source, not the first rule's result.
    mapping = FieldMap.parse(["source=outlet", "title=source"])
    item = parsed({"id": "1", "body": "نص", "source": "wire", "outlet": "okaz"})
    out = mapping.apply(item)
    assert isinstance(out, Delivery)
    assert (out.source, out.title) == ("okaz", "wire")


def test_a_regex_without_a_group_takes_the_whole_match() -> None:
    rule = FieldRule.parse("language=lang:^[a-z]{2}")
    assert rule.value({"lang": "ar-SA"}) == "ar"


def test_a_mapped_value_that_breaks_the_contract_rejects_with_the_reason() -> None:
    mapping = FieldMap.parse(["published_at=date"])
    out = mapping.apply(parsed({"id": "7", "body": "نص", "source": "s", "date": "yesterday"}))
    assert isinstance(out, Rejection)
    assert out.code == "invalid_field" and "published_at" in out.message
    assert out.source_id == "7" and b"yesterday" in out.raw


def test_rejections_pass_through() -> None:
    bad = parsed({"id": "1", "source": "s"})
    assert isinstance(bad, Rejection)
    assert FieldMap.parse(["source=id"]).apply(bad) is bad


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("published_at", "FIELD=KEY"),
        ("=date", "FIELD=KEY"),
        ("date=published_at", "not a field of the input contract"),
        ("source=:x", "key to read is missing"),
        ("source=id:([", "does not compile"),
    ],
)
def test_bad_rules_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        FieldRule.parse(spec)


def _replay(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    return subprocess.run([sys.executable, "-m", "akhbar.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_replay_of_raw_corpus_lines_with_map(tmp_path: Path) -> None:
    """The corpus's own lines, replayed with --map: stored with their outlets and times (embedded)."""
    rows = read_corpus(3000)[::75]
    path = tmp_path / "articles.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    bad = _replay(tmp_path, "replay", str(path), "--map", "date=published_at")
    assert bad.returncode == 2 and b"not a field of the input contract" in bad.stderr

    done = _replay(tmp_path, "replay", str(path), "--json", *(a for m in CORPUS_MAP for a in ("--map", m)))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout)["received"] == len(rows)
    with sqlite3.connect(tmp_path / "akhbar.db") as db:
        delivered = dict(db.execute("SELECT source_id, source FROM deliveries"))
        dated = dict(db.execute("SELECT source_id, published_at FROM stories"))
    assert delivered == {r["id"]: r["id"].split("/")[2] for r in rows}
    assert len(set(delivered.values())) > 1
    assert dated  # each story's time is its record's date
    for source_id, published_at in dated.items():
        row = next(r for r in rows if r["id"] == source_id)
        stored_at = datetime.fromisoformat(published_at).replace(tzinfo=None)
        assert stored_at == datetime.fromisoformat(row["date"])
