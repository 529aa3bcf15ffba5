"""Workers that die, are killed, stopped or paused under load: nothing lost, nothing stored twice.

Scenarios 1-4 and 7 of the fault tier, plus the negative control: with early acknowledgement
(the fail point ``early_ack``) the same kills lose deliveries, which proves these tests can see loss.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from tests.faults.conftest import (
    THROUGHPUT,
    account,
    assert_guarantees,
    corpus,
    executions_since,
    expected_hashes,
    publish,
    quiet,
    recovery,
    report,
    running_on,
    unfinished_report,
    utcnow,
    wait_for,
    with_duplicates,
)
from tests.faults.harness import TIER_SETTINGS, Env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

VISIBILITY = float(TIER_SETTINGS["AKHBAR_VISIBILITY_TIMEOUT"])
# The size for the baseline and the repeated worker kills. The single-fault scenarios
# (2b, 3, 4, 7) use 600: their fault hits one batch at one moment, and the run only has to outlast
# it and its recovery (a visibility timeout, 10 s here); more deliveries add run time, not cases.
FULL_RUN = 10_000
SINGLE_FAULT_RUN = 600
# The negative control's run: a kill that lands between two batches (25 deliveries take about
# 50 ms on a quiet machine) catches nothing and is tried again on the restarted worker, which
# needs work left after the restart's few seconds.
NEGATIVE_CONTROL_RUN = 3_000


def test_1_baseline_two_workers_with_planted_duplicates(env: Env) -> None:
    """10,000 corpus articles and 500 planted exact duplicates (5%) at full speed, 2 workers."""
    articles = corpus(FULL_RUN)
    records = with_duplicates(articles, 0.05)
    planted = len(records) - len(articles)
    expected = expected_hashes(records)
    env.start_workers(2)
    run = publish(env, records)
    assert run.wait(900), unfinished_report(env, run)
    seconds = time.monotonic() - run.started
    figures = account(env, run.ids, "1 baseline", expected)
    figures.seconds = round(seconds, 2)
    figures.notes["deliveries_per_s"] = THROUGHPUT["baseline"] = round(len(run.ids) / seconds, 1)
    figures.notes["planted_duplicates"] = planted
    report(figures)
    assert_guarantees(figures)
    assert figures.matched >= planted
    assert figures.stored + figures.matched == figures.sent
    # every distinct text stored exactly once, none missing
    assert figures.notes["texts_missing"] == 0 and figures.notes["texts_kept_twice"] == 0
    assert figures.notes["texts_kept"] == len(expected)
    assert figures.redeliveries == 0


def test_2_sigkill_worker_three_times(env: Env) -> None:
    """SIGKILL a worker's main process and its children at a random point while it runs a batch,
    restart it; three times in one run of 10,000 deliveries (a deep queue: every restarted worker
    finds work left to interrupt, however long its restart takes on a loaded machine)."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    run = publish(env, corpus(FULL_RUN))  # a full queue first, so every kill finds work to interrupt
    victim, _ = env.start_workers(2)
    run.started = time.monotonic()
    total = len(run.ids)
    kills, recoveries = [], []
    missed = 0
    started = utcnow()
    while len(kills) < 3:
        # Kill only once the (restarted) victim is at work, at a random moment inside a batch.
        assert wait_for(lambda s=started: executions_since(env, victim.name, s) > 0, 120), victim.tail()
        time.sleep(rng.uniform(0.0, 0.5))
        assert wait_for(lambda s=started: running_on(env, victim.name, s), 30, interval=0.01)
        fault_at = utcnow()
        victim.kill()
        # Whether the kill caught an attempt: a record the dead worker left open (nothing settles
        # it before the message runs again). A batch that committed between the look above and
        # the kill makes it a miss, which does not count: the next kill is tried instead.
        if running_on(env, victim.name, started):
            kills.append((started, fault_at))
        else:
            missed += 1
            assert missed <= 5, "more than five kills caught no attempt"
        victim.start()
        started = utcnow()
    assert run.wait(900), unfinished_report(env, run)
    figures = account(env, run.ids, "2 SIGKILL worker x3")
    for since, fault_at in kills:
        recoveries.append(recovery(env, fault_at, caught="unfinished", since=since, until=fault_at))
    figures.recovery_s = max((r for r in recoveries if r is not None), default=None)
    figures.seconds = round(time.monotonic() - run.started, 2)
    figures.notes["recovery_per_kill_s"] = recoveries
    figures.notes["kills_that_caught_nothing"] = missed
    report(figures)
    assert_guarantees(figures)
    assert figures.stored + figures.matched == total  # nothing quarantined by three kills
    assert all(r is not None for r in recoveries)  # each kill interrupted a batch, which ran again


def test_2b_negative_control_early_acks_lose_deliveries(env: Env) -> None:
    """A worker killed mid-batch while messages are acknowledged on receipt: deliveries are lost,
    and the test sees it. The reconciler then finds exactly the lost ones in the publish ledger and
    publishes them again."""
    from worker.reconcile import reconcile_once

    run = publish(env, corpus(NEGATIVE_CONTROL_RUN))
    started = utcnow()
    victim, _ = env.start_workers(2, AKHBAR_FAILPOINTS="early_ack")
    run.started = time.monotonic()
    total = len(run.ids)
    assert wait_for(lambda: run.committed() >= total * 0.2, 120)
    missed = 0
    while True:
        assert wait_for(lambda s=started: running_on(env, victim.name, s), 30, interval=0.01)
        victim.kill()
        # As in test 2: the kill caught a batch if the dead worker left its record open; one that
        # landed between two batches caught nothing, and the next kill is tried instead.
        caught = running_on(env, victim.name, started)
        victim.start()
        if caught:
            break
        missed += 1
        assert missed <= 5, "more than five kills caught no attempt"
        started = utcnow()
    # Past the visibility timeout: anything still recoverable by the broker would be back by now.
    quiet(run, VISIBILITY + 3, 180)
    figures = account(env, run.ids, "2b negative control: early acks")
    figures.seconds = round(time.monotonic() - run.started, 2)
    lost = figures.lost
    # The loss is shown; the recovery runs on workers as deployed. Under early acknowledgement any
    # later end of a task by its time limits (a loaded machine) would lose its deliveries again,
    # which is the fail point's doing, not the reconciler's.
    env.stop_workers()
    env.start_workers(2)
    stats = reconcile_once(env.settings(reconcile_grace=0), run.publisher, grace=0)
    assert run.wait(120), unfinished_report(env, run)
    after = account(env, run.ids, "2b negative control: after reconcile")
    figures.notes["reconciler_republished"] = stats.republished
    figures.notes["kills_that_caught_nothing"] = missed
    figures.notes["lost_after_reconcile"] = after.lost
    report(figures)
    assert lost > 0, "early acknowledgement under SIGKILL must lose deliveries, or the tier cannot see loss"
    assert stats.republished == lost
    assert after.lost == 0 and after.stored_duplicates == 0 and after.double_effects == 0


def test_3_sigkill_pool_child_while_it_runs_a_task(env: Env) -> None:
    """SIGKILL one pool child mid-task (twice): the main process replaces it, the message is
    requeued (reject_on_worker_lost) and its deliveries run again, once."""
    records = corpus(SINGLE_FAULT_RUN)
    half = len(records) // 2
    run = publish(env, records[:half])
    victim, _ = env.start_workers(2)
    run.started = time.monotonic()
    faults = []
    previous = utcnow()
    for k in range(2):
        if k == 0:
            assert wait_for(lambda: run.committed() >= half * 0.2, 120)
        else:
            # The second half of the run (the same run) is published only now, so that the child
            # that replaced the first victim has batches left to be killed in: published at once,
            # the other worker could finish the whole run before the replacement took one.
            run.ids += publish(env, records[half:], run_id=run.run_id).ids
        assert wait_for(lambda p=previous: running_on(env, victim.name, p), 30, interval=0.01), (
            f"{victim.name} ran no attempt in 30 s:\n{victim.stuck_report()}")
        child = victim.children()[0]
        faults.append((previous, utcnow()))
        previous = faults[-1][1]
        child.send_signal(signal.SIGKILL)
        assert wait_for(
            lambda c=child: c.pid not in {p.pid for p in victim.children()} and len(victim.children()) >= 1,
            30,
        )
    assert run.wait(180), unfinished_report(env, run)
    figures = account(env, run.ids, "3 SIGKILL pool child")
    figures.recovery_s = max(
        (r for since, at in faults if (r := recovery(env, at, caught="unfinished", since=since)) is not None),
        default=None,
    )
    figures.seconds = round(time.monotonic() - run.started, 2)
    report(figures)
    assert_guarantees(figures)
    assert victim.alive()
    assert figures.redeliveries > 0
    assert victim.log_path.read_text(errors="replace").count("exited with 'signal 9 (SIGKILL)'") == 2


def test_4_graceful_sigterm_under_load(env: Env) -> None:
    """SIGTERM a worker under load: it finishes its running task, its reserved messages go back to
    the queue at once (not after the visibility timeout), nothing runs twice, nothing is lost."""
    run = publish(env, corpus(600))
    victim, _ = env.start_workers(2)
    run.started = time.monotonic()
    total = len(run.ids)
    assert wait_for(lambda: run.committed() >= total * 0.3, 120)
    started = time.monotonic()
    os.kill(victim.pid, signal.SIGTERM)
    assert victim.proc is not None
    try:
        victim.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{victim.name} still running 30 s after SIGTERM:\n{victim.stuck_report()}")
    exit_s = round(time.monotonic() - started, 2)
    # What the stopped worker held is back on the queue: only the other worker's messages are
    # unacknowledged (concurrency 1, prefetch 1: at most 2).
    unacked = env.redis.admin().hlen("akhbar:unacked")
    assert run.wait(180), unfinished_report(env, run)
    figures = account(env, run.ids, "4 graceful SIGTERM")
    figures.seconds = round(time.monotonic() - run.started, 2)
    figures.recovery_s = exit_s
    figures.notes["exit_s"] = exit_s
    figures.notes["unacked_after_exit"] = unacked
    report(figures)
    assert_guarantees(figures)
    assert exit_s < VISIBILITY
    assert unacked <= 2
    assert figures.redeliveries == 0 and figures.overlapping == 0


def test_7_sigstop_past_visibility_timeout(env: Env) -> None:
    """Pause a worker (SIGSTOP) past the visibility timeout, then resume it: its messages are
    redelivered to the other worker meanwhile, both run them, and nothing takes effect twice."""
    # A generous per-delivery limit: the worker that takes over waits on the paused one's row locks.
    run = publish(env, corpus(SINGLE_FAULT_RUN))
    victim, _ = env.start_workers(2, AKHBAR_DELIVERY_TIME_LIMIT="60")
    run.started = time.monotonic()
    total = len(run.ids)
    assert wait_for(lambda: run.committed() >= total * 0.2, 120)
    assert wait_for(lambda: running_on(env, victim.name), 30, interval=0.01)
    fault_at = utcnow()
    victim.signal_group(signal.SIGSTOP)
    time.sleep(VISIBILITY + 4)
    victim.signal_group(signal.SIGCONT)
    assert run.wait(180), unfinished_report(env, run)
    figures = account(env, run.ids, "7 SIGSTOP past visibility timeout")
    figures.recovery_s = recovery(env, fault_at, caught="repeated")
    figures.seconds = round(time.monotonic() - run.started, 2)
    report(figures)
    assert_guarantees(figures)
    assert figures.redeliveries > 0
    assert victim.alive()
