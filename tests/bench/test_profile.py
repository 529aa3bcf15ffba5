"""``bench.profile`` on a small sample: the ingest task's body in this process, with and without
the profiler, against a fresh database it removes afterwards."""

from __future__ import annotations

import re

import pytest

from bench import profile

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("bare", [True, False])
def test_profile_reports_the_cost_per_delivery(capsys: pytest.CaptureFixture[str], bare: bool) -> None:
    profile.main(["--deliveries", "250", "--cpu", *(["--bare"] if bare else [])])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    # the first batch of 100 warms up; the other 150 are measured
    assert re.match(r"150 deliveries in [0-9.]+ s (without|under) the profiler: ", first), first
    assert ("without the profiler" in first) == bare
    assert float(re.search(r"CPU ([0-9.]+) ms per delivery", first).group(1)) > 0  # type: ignore[union-attr]
    # the profile's frames follow only when there is a profiler
    assert ("ingest" in out.split("\n", 1)[1]) != bare
