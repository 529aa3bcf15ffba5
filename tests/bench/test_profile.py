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
