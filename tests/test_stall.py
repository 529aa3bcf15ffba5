"""A delivery whose computation blocks in a batch (a stuck call) is charged at the stall limit, not
at the first-attempt limit; its batch-mates commit; run alone later, its work waits on the database
and is given the full limit. Real PostgreSQL; the block is a sleep in the ``before`` hook, where the
poison fail point hangs."""

from __future__ import annotations

import os
import time
import uuid

from tests.test_attribution import _batch, _history


def _runner(url: str, task_id: str, attempt: int, before: object, **kw: object) -> object:
    from models.session import session_factory
    from worker.quarantine import Attempt, AttemptRunner

    return AttemptRunner(session_factory(url, write=True),
                         Attempt(task_id=task_id, attempt=attempt, worker="w@test", pid=os.getpid()),
                         max_attempts=3, delivery_time_limit=30, before=before,  # type: ignore[arg-type]
                         **kw)  # type: ignore[arg-type]


def test_a_blocked_delivery_is_charged_at_the_stall_limit_and_its_batch_commits(module_pg: str) -> None:
    from models import ledger
    from models.session import session_factory

    batch = _batch(40)
    ids = [d.delivery_id for d in batch.deliveries]  # type: ignore[attr-defined]
    stuck = ids[2]
    blocked: list[str] = []

    def before(msg: object) -> None:
        if msg.delivery_id == stuck and not blocked:  # type: ignore[attr-defined]
            blocked.append(stuck)
            time.sleep(25)

    task_id = str(uuid.uuid4())
    runner = _runner(module_pg, task_id, 0, before, first_time_limit=20.0, stall_limit=0.1)
    runner.begin(batch)  # type: ignore[attr-defined]
    started = time.monotonic()
    result = runner.run()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 10  # not the 20 s first-attempt limit
    assert result.failed == [stuck]
    assert sorted(o.delivery_id for o in result.outcomes) == sorted(i for i in ids if i != stuck)
    assert _history(module_pg, ids) == {stuck: 1}
    with session_factory(module_pg)() as session:
        error = ledger.history(session, [stuck])[stuck].last_error or ""
    assert "blocked" in error and "a first attempt's limit" in error

    # Its retry runs it alone (database work included): a pause longer than the stall limit is
    # not a stall there, and it is stored.
    def slow(msg: object) -> None:
        time.sleep(0.4)

    retry = _runner(module_pg, task_id, 1, slow, first_time_limit=20.0, stall_limit=0.1)
    plan = retry.begin(batch)  # type: ignore[attr-defined]
    assert [d.delivery_id for d in plan.suspects] == [stuck]
    result = retry.run()  # type: ignore[attr-defined]
    assert [o.delivery_id for o in result.outcomes] == [stuck] and not result.failed
