"""``akhbar replay --from-db`` as a user runs it: embedded (SQLite, in-process worker) and distributed
(Redis, two real celery worker processes, PostgreSQL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update

from models import Delivery, Fingerprint, Reenrichment, SourceKey, Story, StoryVersion
from models.session import session_factory
from tests.conftest import SEEDS, read_corpus
from tests.integration.conftest import ROOT, run_akhbar
from worker.stages.enrich import ENRICHMENT_VERSION

pytestmark = pytest.mark.slow

OLD = "2000.1"


def _corpus_jsonl(path: Path, n: int) -> None:
    rows = []
    for article in read_corpus(n):
        outlet = article["id"].split("/")[2] if article["source_dataset"] == "SaudiNewsNet" else "sanad"
        rows.append(orjson.dumps({"id": article["id"], "title": article["title"], "body": article["body"],
                                  "source": outlet, "url": article["url"]}))
    path.write_bytes(b"\n".join(rows) + b"\n")


def _summary(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = result.stdout.decode().strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got {lines[:3]}"
    return json.loads(lines[0])


def _row_counts(url: str) -> dict[str, int]:
    with session_factory(url)() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Story, StoryVersion, Delivery, Fingerprint, SourceKey)}


def _age(url: str) -> tuple[list[int], dict[int, list[Any]]]:
    """Make every third story look written by an older enrichment that found no places; returns the
    aged ids and the places the current enrichment had found in them."""
    with session_factory(url, write=True).begin() as session:
        rows = session.execute(select(Story.id, Story.enrichment).order_by(Story.id)).all()
        aged = [r.id for r in rows[::3]]
        places = {r.id: r.enrichment["places"] for r in rows[::3] if r.enrichment["places"]}
        for story_id in aged:
            story = session.get(Story, story_id)
            assert story is not None
            session.execute(update(Story).where(Story.id == story_id).values(
                enrichment_version=OLD, enrichment={**story.enrichment, "version": OLD, "places": []}))
    assert places, "the sample needs stories with places"
    return aged, places


def _check_reenriched(url: str, summary: dict[str, Any], aged: list[int], places: dict[int, list[Any]],
                      counts_before: dict[str, int], untouched: dict[int, Any]) -> None:
    assert summary["selected"] == len(aged)
    assert (summary["updated"], summary["unchanged"]) == (len(places), len(aged) - len(places))
    assert (summary["failed"], summary["missing"]) == (0, 0)
    assert summary["changed"] == {"places": len(places)}
    assert summary["enrichment_version"] == ENRICHMENT_VERSION
    assert _row_counts(url) == counts_before  # updated in place: no delivery, story, version or key created
    with session_factory(url)() as session:
        stories = {s.id: s for s in session.scalars(select(Story))}
        records = session.scalar(select(func.count()).select_from(Reenrichment)
                                 .where(Reenrichment.run_id == summary["run_id"]))
    assert records == len(aged)
    assert {s.enrichment_version for s in stories.values()} == {ENRICHMENT_VERSION}
    for story_id, found in places.items():
        assert stories[story_id].enrichment["places"] == found
    for story_id, (updated_at, enrichment) in untouched.items():
        assert (stories[story_id].updated_at, stories[story_id].enrichment) == (updated_at, enrichment)


def _snapshot(url: str, exclude: list[int]) -> dict[int, Any]:
    with session_factory(url)() as session:
        stories = session.scalars(select(Story).where(Story.id.not_in(exclude)))
        return {s.id: (s.updated_at, s.enrichment) for s in stories}


def test_reenrich_in_embedded_mode(tmp_path: Path) -> None:
    shutil.copytree(SEEDS, tmp_path / "seeds")
    _corpus_jsonl(tmp_path / "corpus.jsonl", 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}

    def akhbar(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "akhbar.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, timeout=300, check=False)

    ingest = _summary(akhbar("replay", "seeds", "corpus.jsonl", "--json"))
    assert ingest["new"] > 30
    url = f"sqlite:///{tmp_path / 'akhbar.db'}"
    aged, places = _age(url)
    before, untouched = _row_counts(url), _snapshot(url, aged)

    first = _summary(akhbar("replay", "--from-db", "--json"))
    _check_reenriched(url, first, aged, places, before, untouched)
    # Everything is current now: the default selection is empty, and --all changes nothing.
    after_first = _snapshot(url, [])
    assert _summary(akhbar("replay", "--from-db", "--json"))["selected"] == 0
    everything = _summary(akhbar("replay", "--from-db", "--all", "--source", "seeds", "--json"))
    assert (everything["selected"], everything["unchanged"], everything["changed"]) == (1, 1, {})
    assert _row_counts(url) == before
    assert _snapshot(url, []) == after_first


@pytest.mark.integration
def test_reenrich_with_real_workers(workers, akhbar_env: dict[str, str], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    _corpus_jsonl(corpus, 300)
    url = akhbar_env["AKHBAR_DATABASE_URL"]
    ingest = _summary(run_akhbar(akhbar_env, "replay", str(SEEDS), str(corpus), "--json"))
    assert ingest["new"] > 250
    aged, places = _age(url)
    before, untouched = _row_counts(url), _snapshot(url, aged)

    first = _summary(run_akhbar(akhbar_env, "replay", "--from-db", "--json"))
    _check_reenriched(url, first, aged, places, before, untouched)
    print(f"\nre-enrichment: {first['selected']} stories in {first['seconds']} s "
          f"= {first['stories_per_second']} stories/s with 2 worker processes")

    # Running again is harmless: nothing selected by default, and --all finds nothing to write.
    after_first = _snapshot(url, [])
    assert _summary(run_akhbar(akhbar_env, "replay", "--from-db", "--json"))["selected"] == 0
    everything = _summary(run_akhbar(akhbar_env, "replay", "--from-db", "--all", "--json"))
    assert everything["selected"] == before["stories"]
    assert everything["unchanged"] == before["stories"] and everything["changed"] == {}
    assert _row_counts(url) == before
    assert _snapshot(url, []) == after_first


def test_from_db_refuses_paths_and_since_needs_from_db(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    both = subprocess.run([sys.executable, "-m", "akhbar.cli", "replay", "--from-db", str(ROOT / "seeds")],
                          cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False)
    assert both.returncode == 2 and b"--from-db takes no paths" in both.stderr
    since = subprocess.run([sys.executable, "-m", "akhbar.cli", "replay", "seeds", "--since", "7d"],
                           cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False)
    assert since.returncode == 2 and b"apply to --from-db only" in since.stderr
