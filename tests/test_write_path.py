"""The write path's batch statements on PostgreSQL (one INSERT over unnest per table) store exactly
what SQLAlchemy's Core insert of the same rows stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, text

from models import bulk, ledger
from models import ingest as queries
from models.delivery import Delivery


def _rows(prefix: str) -> list[dict[str, Any]]:
    at = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    return [
        dict(id=f"{prefix}-1", source="wire", source_id="a", format="json", run_id="r", correlation_id="c",
             received_at=at, processed_at=at, status="new", story_id=None, version=1, duplicate_of=None,
             content_hash="h1", title="خبر", body="نص الخبر", record={"url": None, "extra": {"k": ["ع"]}},
             raw=None, error=None),
        # a naive timestamp is UTC; another zone is the same instant
        dict(id=f"{prefix}-2", source="wire", source_id=None, format="xml", run_id=None, correlation_id="c",
             received_at=datetime(2026, 11, 26, 5, 1),
             processed_at=datetime(2026, 11, 26, 8, 2, tzinfo=timezone(timedelta(hours=3))),
             status="rejected", story_id=None, version=None, duplicate_of=None, content_hash=None,
             title=None, body=None, record=None, raw=b"\x00\xff<bad>",
             error={"code": "too_large", "message": "x"}),
    ]


def _stored(session: Any, prefix: str) -> list[dict[str, Any]]:
    # The whole row as JSON (a JSON null and an SQL NULL differ there), without the id's prefix.
    return [dict(r[0], id=r[0]["id"].split("-", 1)[1]) for r in session.execute(text(
        "SELECT to_jsonb(d) FROM deliveries d WHERE id LIKE :p ORDER BY id"), {"p": f"{prefix}-%"})]


def test_unnest_insert_stores_what_the_core_insert_stores(db_session) -> None:
    table = Delivery.__table__
    core_rows = [{c: r.get(c) for c in queries.DELIVERY_COLUMNS} | {"attempts": 1} for r in _rows("core")]
    db_session.connection().execute(insert(table), core_rows)
    assert queries.insert_deliveries(db_session, _rows("unnest")) == {"unnest-1", "unnest-2"}
    core, unnest = _stored(db_session, "core"), _stored(db_session, "unnest")
    assert len(core) == 2
    assert unnest == core
    assert core[0]["error"] is None and core[1]["record"] is None  # JSON null, as Core writes None
    assert db_session.execute(text("SELECT count(*) FROM deliveries WHERE id LIKE 'unnest-%'"
                                   " AND error IS NULL")).scalar() == 0


def test_unnest_insert_skips_conflicts_and_keeps_row_order(db_session) -> None:
    rows = _rows("conflict")
    assert queries.insert_deliveries(db_session, rows[:1]) == {"conflict-1"}
    # an id already stored, and the same id twice in one batch: the first one is kept
    again = [rows[0], rows[1], dict(rows[1], status="new")]
    assert queries.insert_deliveries(db_session, again) == {"conflict-2"}
    status = db_session.execute(text("SELECT status FROM deliveries WHERE id = 'conflict-2'")).scalar()
    assert status == "rejected"
    sql = bulk.insert_sql(Delivery.__table__, ("id", "record"), conflict=("id",), returning=("id",))
    assert "WITH ORDINALITY" in sql and "ORDER BY u.n" in sql and "CAST(u.c1 AS jsonb)" in sql


def test_execution_records_start_and_finish_in_one_statement_each(db_session) -> None:
    ids = ledger.start_executions(db_session, delivery_ids=["ex-1", "ex-2", "ex-3"], task_id="t-ex",
                                  attempt=2, worker="w", pid=123)
    assert sorted(ids) == ["ex-1", "ex-2", "ex-3"]
    assert ids["ex-1"] < ids["ex-2"] < ids["ex-3"]  # in the order given
    ledger.finish_executions(db_session, {ids["ex-1"]: ("stored", None),
                                          ids["ex-2"]: ("timeout", "Traceback")})
    rows = db_session.execute(text(
        "SELECT delivery_id, task_id, attempt, worker, pid, outcome, error, finished_at IS NOT NULL,"
        " finished_at >= started_at FROM executions WHERE task_id = 't-ex' ORDER BY delivery_id")).all()
    assert [tuple(r) for r in rows] == [
        ("ex-1", "t-ex", 2, "w", 123, "stored", None, True, True),
        ("ex-2", "t-ex", 2, "w", 123, "timeout", "Traceback", True, True),
        ("ex-3", "t-ex", 2, "w", 123, None, None, False, None),
    ]
    assert ledger.history(db_session, ["ex-1", "ex-2", "ex-3"])["ex-2"].timeouts == 1


def test_a_batch_losing_a_content_claim_keeps_its_source_key_on_the_winners_story(committed) -> None:
    """The stories of a batch are created before its keys are claimed, with the keys pointing at
    them; a delivery that then loses its content claim to a concurrent batch is a duplicate, its
    story is deleted again, and the source key it won points at the winner's story."""
    import threading

    from sqlalchemy import func, select

    from models import Delivery as DeliveryRow
    from models import SourceKey, Story, StoryVersion
    from worker.messages import Delivery, DeliveryMessage, IngestBatch, new_delivery_id
    from worker.pipeline import process_batch

    sessions, source = committed
    body = "أعلنت الوزارة اليوم عن خطة جديدة لتطوير النقل العام في المدن الكبرى خلال العام المقبل."

    def msg(sid: str, text: str) -> DeliveryMessage:
        record = Delivery(id=sid, source=source, title="خبر", body=text)
        return DeliveryMessage(delivery_id=new_delivery_id(), received_at=datetime.now(UTC),
                               correlation_id="c", run_id="claims", record=record)

    first, same_text = msg("c1", body), msg("c2", body)
    other = msg("c3", body + " وأضافت أن التنفيذ يبدأ قريبا.")
    statuses: list[str] = []
    with sessions.begin() as s1:
        assert [o.status for o in process_batch(s1, IngestBatch(deliveries=[first]))] == ["new"]

        def run() -> None:
            with sessions.begin() as s2:
                outcomes = process_batch(s2, IngestBatch(deliveries=[same_text, other]))
                statuses.extend(o.status for o in outcomes)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(1.5)
        assert thread.is_alive(), "the second batch waits for the first one's content claim"
    thread.join(30)
    assert statuses == ["duplicate", "new"]
    with sessions() as s:
        stories = dict(s.execute(select(Story.canonical_delivery_id, Story.id)
                                 .where(Story.source == source)).tuples().all())
        assert sorted(stories) == sorted([first.delivery_id, other.delivery_id])
        keys = {k.source_id: (k.delivery_id, k.story_id, k.version) for k in s.scalars(
            select(SourceKey).where(SourceKey.source == source))}
        assert keys == {"c1": (first.delivery_id, stories[first.delivery_id], 1),
                        "c2": (same_text.delivery_id, stories[first.delivery_id], 1),
                        "c3": (other.delivery_id, stories[other.delivery_id], 1)}
        row = s.get(DeliveryRow, same_text.delivery_id)
        assert (row.status, row.story_id, row.duplicate_of) == (
            "duplicate", stories[first.delivery_id], first.delivery_id)
        assert s.scalar(select(func.count()).select_from(StoryVersion).where(
            StoryVersion.story_id.in_(stories.values()))) == 2


def test_key_holders_and_processed_deliveries_in_one_statement_each(db_session) -> None:
    assert queries.claim_source_keys(db_session, [("wire", "kh-1", "d-kh-1"), ("wire", "kh-2", "d-kh-2")])
    assert queries.claim_fingerprints(db_session, [("h-kh-1", "d-kh-1")], stories={"h-kh-1": (None, 3)})
    by_key, by_hash = queries.key_holders(db_session, [("wire", "kh-1"), ("wire", "kh-2"), ("wire", "kh-9"),
                                                       ("other", "kh-1")], ["h-kh-1", "h-kh-9"])
    assert by_key == {("wire", "kh-1"): queries.Holder("d-kh-1", None, 1),
                      ("wire", "kh-2"): queries.Holder("d-kh-2", None, 1)}
    assert by_hash == {"h-kh-1": queries.Holder("d-kh-1", None, 3)}
    assert queries.key_holders(db_session, [], []) == ({}, {})
    assert queries.key_holders(db_session, [], ["h-kh-1"])[1] == by_hash
    queries.insert_deliveries(db_session, _rows("done"))
    assert queries.processed_deliveries(db_session, ["done-1", "done-2", "done-3"]) == {
        "done-1": "new", "done-2": "rejected"}
