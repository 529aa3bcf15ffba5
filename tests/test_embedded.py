"""Embedded mode: no AKHBAR_REDIS_URL, a SQLite file, the in-process worker; what a new user runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKHBAR_")}
    return subprocess.run([sys.executable, "-m", "akhbar.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=300, check=False)


def test_replay_seeds_twice_in_a_fresh_directory(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    first = _run(tmp_path, "replay", "seeds/", "--json")
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    summary = json.loads(first.stdout)
    assert (summary["received"], summary["new"], summary["duplicate"], summary["rejected"]) == (1, 1, 0, 0)
    assert (tmp_path / "akhbar.db").exists()  # the default SQLite file, in the working directory

    second = _run(tmp_path, "replay", "seeds/", "--json")
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert json.loads(second.stdout)["duplicate"] == 1

    export = _run(tmp_path, "export")
    assert export.returncode == 0
    rows = [json.loads(line) for line in export.stdout.decode().splitlines()]
    assert [r["status"] for r in rows] == ["new", "duplicate"]
    assert rows[0]["story_id"] == rows[1]["story_id"] and rows[1]["duplicate_of"] == rows[0]["delivery_id"]
    assert rows[0]["body"].count("\n") == 20  # 21 paragraphs, split back from the seed's ., joins
    assert rows[0]["language"] == "ar"

    shown = _run(tmp_path, "stories", "show", str(rows[0]["story_id"]), "--json")
    assert shown.returncode == 0
    story = json.loads(shown.stdout)
    assert len(story["paragraphs"]) == 21 and len(story["deliveries"]) == 2


def test_replay_reports_a_missing_path_clearly(tmp_path: Path) -> None:
    result = _run(tmp_path, "replay", "nope/")
    assert result.returncode == 2
    assert b"no such file or directory: nope" in result.stderr
