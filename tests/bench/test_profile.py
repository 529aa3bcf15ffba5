"""``bench.profile`` on a small sample: the ingest task's body in one process, with and without
the profiler, against a fresh database it removes afterwards. Run as a command, as a user runs it:
it sets up logging for the worker's lines, which must not outlive it in the test process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bare", [True, False])
def test_profile_reports_the_cost_per_delivery(bare: bool) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.profile", "--deliveries", "250", "--cpu",
                           *(["--bare"] if bare else [])],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    first = out.splitlines()[0]
    # the first batch of 100 warms up; the other 150 are measured
    assert re.match(r"150 deliveries in [0-9.]+ s (without|under) the profiler: ", first), first
    assert ("without the profiler" in first) == bare
    assert float(re.search(r"CPU ([0-9.]+) ms per delivery", first).group(1)) > 0  # type: ignore[union-attr]
    # the profile's frames follow only when there is a profiler
    assert ("ingest" in out.split("\n", 1)[1]) != bare


def test_stages_time_the_computations_alone_beside_the_task() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.profile", "--deliveries", "250", "--stages"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = done.stdout.splitlines()[:2]
    assert "without the profiler" in first, first
    task_cpu = float(re.search(r"CPU ([0-9.]+) ms per delivery", first).group(1))  # type: ignore[union-attr]
    found = re.fullmatch(r"the computations alone, after each batch: normalize ([0-9.]+), "
                         r"enrich ([0-9.]+), signature ([0-9.]+) ms per delivery, ([0-9.]+) in all: "
                         r"([0-9.]+)% of the task's CPU", second)
    assert found, second
    normalize, enrich, signature, total, share = map(float, found.groups())
    # every measured delivery is normalized, and the corpus sample has new stories to enrich and sign
    assert normalize > 0 and enrich > 0 and signature > 0
    assert total == pytest.approx(normalize + enrich + signature, abs=0.002)
    # the share is of the task's own CPU, the computations' time taken out of it
    assert share == pytest.approx(100 * total / task_cpu, abs=0.2)
    assert 0 < share < 100


def test_computations_leave_exact_duplicates_unenriched() -> None:
    from bench import profile
    from worker.messages import Delivery

    figures = profile.Computations()
    records = [Delivery(source="s", id=str(i), title="عنوان", body=f"نص الخبر رقم {i % 2}", format="json")
               for i in range(4)]
    figures.run(records)
    # four normalized; the 3rd and 4th repeat the 1st and 2nd's text (content hash): two enriched
    assert figures.deliveries == 4
    assert len(figures.seen) == 2 * 2
    assert figures.total() == pytest.approx(figures.normalize + figures.enrich + figures.signature)
