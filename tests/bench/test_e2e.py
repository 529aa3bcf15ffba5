"""The end-to-end benchmark harness on a small sample: every scenario runs and reports its figures.

Real worker processes, Redis and PostgreSQL, as in the full benchmark; nothing here asserts on
time, only that each figure is there, consistent with the stored rows, and that the harness
leaves no database or Redis key behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis

from bench import e2e
from tests.conftest import PG_ADMIN_URL, REDIS_BASE_URL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def result(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    opts = e2e.Options(
        deliveries=200,
        workers=1,
        naive_deliveries=60,
        rate=100,
        scaling=False,
        embedded_records=40,
        message_sample=100,
        redis_url=REDIS_BASE_URL,
        admin_url=PG_ADMIN_URL,
        logs=tmp_path_factory.mktemp("e2e-logs"),
    )
    return e2e.run(opts)


def test_deliveries_mix_originals_duplicates_and_edits() -> None:
    lines, kinds = e2e.build_records(200, seed=7)
    assert len(lines) == 200 == sum(kinds.values())
    assert kinds["original"] == 174
    assert kinds["redelivery"] and kinds["surface"]
    # the same seed gives the same deliveries, in the same order
    assert e2e.build_records(200, seed=7)[0] == lines


def test_every_delivery_is_committed_and_counted(result: dict) -> None:
    main = result["throughput"]
    assert result["deliveries"] == main["published"] == main["committed"] == 200
    assert sum(main["outcomes"].values()) == 200
    assert main["outcomes"]["duplicate"] >= 1 and main["outcomes"]["new"] >= 100
    assert result["latency"]["committed"] == 200 and result["latency"]["rate"] == 100


def test_headline_figures_are_reported(result: dict) -> None:
    for key in ("stories_per_second", "ratio_vs_naive", "p50_ms", "p95_ms", "p99_ms", "worker_rss_mb"):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    naive, after = result["naive"], result["naive_after"]
    assert naive["published"] == naive["committed"] == after["published"] == after["committed"] > 0
    # the baseline's rate is its two runs together (before and after akhbar's), and the ratio is taken to it
    pooled = (naive["committed"] + after["committed"]) / (naive["seconds"] + after["seconds"])
    assert result["naive_stories_per_second"] == pytest.approx(pooled, rel=0.01)
    assert min(naive["stories_per_second"], after["stories_per_second"]) <= pooled * 1.01
    assert pooled <= max(naive["stories_per_second"], after["stories_per_second"]) * 1.01
    assert result["ratio_vs_naive"] == pytest.approx(result["stories_per_second"] / pooled, rel=0.01)
    assert {"normalize", "dedup", "enrich", "persist"} <= set(result["stage_median_ms"])
    assert {"normalize", "exact", "commit"} <= set(naive["stage_median_ms"])
    assert result["throughput"]["log_lines_per_story"] >= 3  # one summary line per stage per story
    for run in (result["throughput"], naive):
        assert run["worker_cpu_ms_per_story"] > 0 and run["producer_cpu_ms_per_story"] > 0
        # the worker node's consumer process takes and hands out the messages: a share of the whole
        # (it may round to 0 on a short run: the CPU clock counts in ticks of 10 ms)
        assert 0 <= run["worker_node_cpu_ms_per_story"] < run["worker_cpu_ms_per_story"]


def test_cpu_per_story_counts_every_process_of_both_designs(result: dict) -> None:
    main, naive, after = result["throughput"], result["naive"], result["naive_after"]
    for run in (main, naive, after):
        parts = run["worker_cpu_ms_per_story"] + run["producer_cpu_ms_per_story"]
        assert run["cpu_ms_per_story"] == pytest.approx(parts + sum(run["server_cpu_ms_per_story"].values()),
                                                        abs=0.002)
        assert run["worker_cpu_ms_per_story"] > 0 and run["producer_cpu_ms_per_story"] > 0
    assert result["cpu_ms_per_story"] == main["cpu_ms_per_story"]
    runs = (naive, after)
    both = sum(r["cpu_ms_per_story"] * r["committed"] for r in runs) / sum(r["committed"] for r in runs)
    assert result["naive_cpu_ms_per_story"] == pytest.approx(both, abs=0.002)
    assert result["cpu_ratio_vs_naive"] == pytest.approx(both / main["cpu_ms_per_story"], abs=0.01)


def test_queue_bytes_and_embedded_mode(result: dict) -> None:
    sizes = result["message_bytes"]
    assert sizes["akhbar_bytes_per_story"] < sizes["naive_bytes_per_story"]
    assert sizes["ratio"] > 1
    embedded = result["embedded"]
    assert embedded["received"] == 40
    assert sum(embedded[k] for k in ("new", "duplicate", "near_duplicate", "update", "rejected")) == 40
    assert embedded["stories_per_second"] > 0


def test_nothing_is_left_behind(result: dict) -> None:
    token = f"_{os.getpid()}_"
    client = redis.Redis.from_url(REDIS_BASE_URL)
    assert not list(client.scan_iter(match=f"akhbar-bench-*-{os.getpid()}_*", count=1000))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        names = [
            r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'akhbar_bench_%'")
        ]
    assert not [n for n in names if token in n]
