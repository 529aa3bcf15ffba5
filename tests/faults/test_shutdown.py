"""A warm shutdown that arrives while a task is still being handed to a pool process.

The prefork pool writes a task to its process through a pipe; an akhbar batch is larger than the
pipe's buffer, so the write takes several steps. A SIGTERM between two of them used to leave the
process waiting for the rest of a message that never came, and the worker never exited
(worker/pool.py). Here the pool process is paused so that the write stalls half-way, the worker is
sent SIGTERM, and the process resumed: the worker must finish that batch and exit.

A task small enough to fit the pipe in one write has the same window between the end of the write
and the process's acceptance: the pool dropped such a task at shutdown while the process still ran
it, stopped reading the process's replies, and the process then waited 30 s for its reply to be
read before it exited. The second test pauses the process with one such task in its pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.faults.conftest import account, assert_guarantees, corpus, publish, report, wait_for
from tests.faults.harness import TIER_SETTINGS, Env

pytestmark = [pytest.mark.faults]


@pytest.mark.parametrize(
    "deliveries",
    [
        pytest.param(int(TIER_SETTINGS["AKHBAR_BATCH_SIZE"]), id="half-written"),
        pytest.param(1, id="written-not-accepted"),
    ],
)
def test_sigterm_while_a_task_is_handed_to_the_pool_process(env: Env, deliveries: int) -> None:
    (worker,) = env.start_workers(1)
    (child,) = worker.children()
    child.suspend()  # SIGSTOP: the process stops reading its pipe
    run = publish(env, corpus(deliveries))
    assert len(run.ids) == deliveries
    broker = env.redis.admin()
    # The worker has taken the message and begun writing it to the paused process.
    assert wait_for(lambda: broker.hlen("akhbar:unacked") == 1, 30)
    time.sleep(1)
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(2)
    child.resume()
    assert worker.proc is not None
    try:
        worker.proc.wait(20)
    except subprocess.TimeoutExpired:
        stuck = worker.stuck_report()
        worker.kill()
        pytest.fail(f"the worker was still running 20 s after SIGTERM:\n{stuck}")
    assert worker.proc.returncode == 0
    # The batch the process was being handed ran to its commit, and its message was acknowledged.
    assert run.committed() == len(run.ids)
    assert broker.hlen("akhbar:unacked") == 0
    assert broker.llen("akhbar:akhbar.bulk") == 0
    figures = account(env, run.ids, f"warm shutdown, {deliveries} handed to a paused pool process")
    report(figures)
    assert_guarantees(figures)
    assert figures.redeliveries == 0
