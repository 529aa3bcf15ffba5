"""The pipeline: one micro-batch of deliveries through normalize -> dedup -> enrich -> persist.

Plain functions, no Celery: the task in ``worker/tasks.py`` is a thin adapter around
:func:`process_batch`, and tests and benchmarks call it directly.

Guarantees, per batch: one database transaction, committed by the caller; one bad delivery is
recorded as ``rejected`` (with its traceback) without failing or delaying its neighbours; a
delivery already committed (a redelivered message) is skipped, so running a batch twice stores
nothing twice. Transient database errors propagate, and the whole batch is retried.

Speed: the stages' CPU work runs per delivery, but the batch's database work is a handful of
statements (one SELECT for every key holder, one ``INSERT ... ON CONFLICT`` per key table, one
INSERT each for stories, versions and deliveries), not several statements and a SAVEPOINT per
delivery. A batch that lost a race to a concurrent batch (a key or a redelivery it recorded first)
is written that way again, seeing the winner's rows from the start; when a batch cannot be written
that way, it is run one delivery at a time, each in its own SAVEPOINT (:func:`process_one`), with
the same outcomes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from models import ingest as queries
from worker import precompute
from worker.messages import Delivery, DeliveryMessage, IngestBatch
from worker.neardup import CandidateIndex
from worker.stages import dedup
from worker.stages import enrich as enrich_stage
from worker.stages import neardup as neardup_stage
from worker.stages import normalize as normalize_stage

PIPELINE_VERSION = "1"

log = structlog.get_logger("akhbar.pipeline")

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the whole batch for: the database or the network went away, or a
    story this batch names was merged into another by a concurrent batch after it was read (a
    foreign key to ``stories`` refused: the retry reads the story it went into)."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, IntegrityError) and getattr(exc.orig, "sqlstate", None) == "23503":
        return "stories" in str(exc.orig)
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# SQLSTATEs of a transaction that lost to a concurrent one: the other has ended by the time the
# error is raised, so running the batch again needs no wait.
_CONFLICT_STATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def is_conflict(exc: BaseException) -> bool:
    """Transient errors a concurrent batch caused, over once they are raised: a deadlock, a
    serialization failure, a story merged away after this batch read it (the foreign key refused,
    the merging transaction committed), the near-duplicate stage's stories merged again and again.
    Nothing needs time to come back: the first retry runs at once (worker.tasks.retry_countdown)."""
    if isinstance(exc, neardup_stage.StoriesMoved):
        return True
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(exc, DBAPIError) and state in _CONFLICT_STATES:
        return True
    return state == "23503" and is_transient(exc)  # a foreign key to ``stories``, see is_transient


@dataclass(slots=True)
class Outcome:
    delivery_id: str
    status: str  # new | duplicate | near_duplicate | update | rejected | already_processed | failed
    story_id: int | None = None
    duplicate_of: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    # status "failed": nothing stored, the attempt is charged ("timeout" | "error", with the traceback).
    failure: str | None = None
    error: str | None = None


def _timed(outcome: Outcome, stage: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    start = time.perf_counter()
    try:
        return fn(**kwargs)
    finally:
        outcome.stage_ms[stage] = round((time.perf_counter() - start) * 1000, 3)


def _stage_log(outcome: Outcome, stage: str, result: str) -> None:
    log.info("stage_completed", stage=stage, outcome=result, duration_ms=outcome.stage_ms.get(stage, 0.0),
             story_id=outcome.story_id)


def store_rejected(session: Session, msg: DeliveryMessage, *, code: str, message: str,
                    raw: bytes | None, tb: str | None = None) -> bool:
    error: dict[str, Any] = {"code": code, "message": message}
    if tb:
        error["traceback"] = tb
    record = msg.record
    return queries.insert_delivery(
        session, id=msg.delivery_id, source=msg.source,
        source_id=record.id if record else msg.rejected.source_id,  # type: ignore[union-attr]
        format=record.format if record else msg.rejected.format,  # type: ignore[union-attr]
        run_id=msg.run_id, correlation_id=msg.correlation_id, received_at=msg.received_at,
        status="rejected", title=record.title if record else None, body=record.body if record else None,
        record=_record_fields(msg), raw=raw, error=error,
    )


def _record_fields(msg: DeliveryMessage) -> dict[str, Any] | None:
    record = msg.record
    if record is None:
        return None
    return {
        "url": record.url,
        "published_at": record.published_at.isoformat() if record.published_at else None,
        "language": record.language,
        "extra": record.extra,
    }


def process_one(session: Session, msg: DeliveryMessage, *,
                propagate: tuple[type[BaseException], ...] = (),
                neardup_index: CandidateIndex | None = None) -> Outcome:
    """Run one delivery through the stages inside a savepoint of ``session``'s transaction.

    ``neardup_index`` (the shared Redis index, or the embedded mode's in-process one) turns a new
    story that is the same story as a stored one into its near-duplicate or update; without it
    near-duplicates are not looked for.

    An error of a ``propagate`` type (a time limit) is not the delivery's verdict: it is raised to
    the caller, which counts the attempt, instead of quarantining the delivery on the spot.
    """
    outcome = Outcome(delivery_id=msg.delivery_id, status="rejected")
    if msg.rejected is not None:
        with session.begin_nested():
            _timed(outcome, "persist", store_rejected, session=session, msg=msg, code=msg.rejected.code,
                   message=msg.rejected.message, raw=msg.rejected.raw)
        _stage_log(outcome, "persist", "rejected")
        return outcome
    try:
        with session.begin_nested() as savepoint:
            result = _process_record(session, msg, outcome, neardup_index)
            if result is None:
                savepoint.rollback()
                outcome.status = "already_processed"
            return outcome
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, propagate):
            raise
        # A bug or an input the stages cannot handle: quarantine this delivery, keep its neighbours.
        log.error("delivery_failed", stage=_failed_stage(outcome), error=repr(exc), exc_info=True)
        outcome.status, outcome.story_id = "rejected", None
        with session.begin_nested():
            store_rejected(session, msg, code="processing_error", message=f"{type(exc).__name__}: {exc}",
                            raw=None, tb=traceback.format_exc(limit=20))
        return outcome


def _failed_stage(outcome: Outcome) -> str:
    for stage in ("normalize", "dedup", "enrich", "persist"):
        if stage not in outcome.stage_ms:
            return stage
    return "persist"


def _process_record(session: Session, msg: DeliveryMessage, outcome: Outcome,
                    neardup_index: CandidateIndex | None = None) -> Outcome | None:
    record = msg.record
    assert record is not None
    norm = _timed(outcome, "normalize", normalize_stage.normalize, title=record.title, body=record.body,
                  format=record.format)
    _stage_log(outcome, "normalize", "ok")

    match = _timed(outcome, "dedup", dedup.exact, session=session, source=record.source, source_id=record.id,
                   content_hash=norm.content_hash, delivery_id=msg.delivery_id)
    common = dict(
        id=msg.delivery_id, source=record.source, source_id=record.id, format=record.format,
        run_id=msg.run_id, correlation_id=msg.correlation_id, received_at=msg.received_at,
        content_hash=norm.content_hash, title=record.title, body=record.body, record=_record_fields(msg),
    )
    if match is not None:
        outcome.status, outcome.story_id = "duplicate", match.story_id
        outcome.duplicate_of = match.delivery_id
        _stage_log(outcome, "dedup", f"duplicate_by_{match.key}")
        if match.key == "content" and match.story_id is not None:
            queries.attach_keys(session, source=record.source, source_id=record.id, content_hash=None,
                                story_id=match.story_id, version=match.version)
        stored = _timed(outcome, "persist", queries.insert_delivery, session=session, status="duplicate",
                        story_id=match.story_id, version=match.version, duplicate_of=match.delivery_id,
                        **common)
        _stage_log(outcome, "persist", "duplicate" if stored else "already_processed")
        return outcome if stored else None
    _stage_log(outcome, "dedup", "new")

    enrichment = _timed(outcome, "enrich", enrich_stage.enrich, title=record.title, body=record.body,
                        paragraphs=norm.paragraphs, match_title=norm.match_title, match_body=norm.match_body,
                        published_at=record.published_at, language_hint=record.language)
    _stage_log(outcome, "enrich", "ok")

    def persist() -> bool:
        story = queries.create_story(
            session, canonical_delivery_id=msg.delivery_id, source=record.source, source_id=record.id,
            title=record.title, body=record.body, paragraphs=norm.paragraphs,
            normalized_title=norm.match_title, normalized_body=norm.match_body,
            content_hash=norm.content_hash, url=record.url, published_at=record.published_at,
            language=enrichment.get("language") or record.language, enrichment=enrichment,
            enrichment_version=enrich_stage.ENRICHMENT_VERSION, pipeline_version=PIPELINE_VERSION,
        )
        outcome.story_id = story.id
        queries.attach_keys(session, source=record.source, source_id=record.id,
                            content_hash=norm.content_hash, story_id=story.id, version=1)
        return queries.insert_delivery(session, status="new", story_id=story.id, version=1, **common)

    stored = _timed(outcome, "persist", persist)
    outcome.status = "new"
    if stored and neardup_index is not None and outcome.story_id is not None:
        item = _neardup_item(msg, norm, outcome.story_id)
        decision = neardup_stage.apply(session, neardup_index, [item])[msg.delivery_id]
        outcome.status, outcome.story_id = decision.status, decision.story_id
        outcome.duplicate_of = decision.duplicate_of
        outcome.stage_ms["neardup"] = decision.duration_ms
        _stage_log(outcome, "neardup", decision.status)
    _stage_log(outcome, "persist", outcome.status if stored else "already_processed")
    return outcome if stored else None


def _neardup_item(msg: DeliveryMessage, norm: normalize_stage.Normalized,
                  story_id: int, signature: Any = None) -> neardup_stage.Item:
    record = msg.record
    assert record is not None
    return neardup_stage.Item(
        delivery_id=msg.delivery_id, story_id=story_id, source=record.source, title=record.title,
        body=record.body, paragraphs=norm.paragraphs, match_title=norm.match_title,
        match_body=norm.match_body, content_hash=norm.content_hash, published_at=record.published_at,
        guid=_wire_guid(record.id, record.extra), signature=signature)


def _wire_guid(source_id: str, extra: dict[str, object]) -> str | None:
    """The guid of a NewsML-G2 / NITF delivery (its id is ``guid:version``), else None."""
    guid = extra.get("guid")
    return guid if isinstance(guid, str) and guid and source_id.startswith(f"{guid}:") else None


class Around(Protocol):
    """Wraps one delivery's own work: ``io`` says whether that work waits on the database or
    Redis (a delivery run on its own) or is computation only (a step of a batch)."""

    def __call__(self, msg: DeliveryMessage, *, io: bool = True) -> AbstractContextManager[object]: ...


# One log line held back until its transaction commits: the event's keyword arguments.
StageLine = dict[str, Any]


def process_batch(session: Session, batch: IngestBatch, *,
                  propagate: tuple[type[BaseException], ...] = (), around: Around | None = None,
                  timeouts: tuple[type[BaseException], ...] = (),
                  neardup_index: CandidateIndex | None = None, neardup_window_days: int = 7,
                  stage_lines: list[StageLine] | None = None) -> list[Outcome]:
    """Run every delivery of ``batch`` in ``session``'s open transaction; the caller commits.

    ``neardup_index`` as in :func:`process_one`; when Redis has lost it, it is rebuilt first from
    the signatures stored in the last two ``neardup_window_days`` windows.

    The batch is written with a handful of statements (:func:`_process_together`), not several per
    delivery. If a concurrent batch won a race against it (a key it depends on, a redelivery
    committed meanwhile), its SAVEPOINT is rolled back and it is written together again, up to
    :data:`TOGETHER_ATTEMPTS` times; if that cannot be done (still racing, a row the database
    refuses), the deliveries run one by one through :func:`process_one`. Either way the outcomes
    are the same.

    ``around(msg, io=...)`` wraps each delivery's own work (a deadline, the delivery being charged):
    in the batch written together, its computation only (``io=False``: normalizing, enriching);
    one by one, its whole :func:`process_one`, database included (``io=True``). An
    error escaping it is then charged to that delivery alone, which comes back with status
    ``failed`` (``failure`` "timeout" for ``timeouts`` types, else "error") and nothing stored,
    while the rest of the batch goes on. Without ``around`` such errors propagate. ``propagate``
    as in :func:`process_one`.

    The batch written together logs one ``stage_completed`` line per stage per delivery. Given
    ``stage_lines``, they are added to it instead of written, for the caller to write once the
    transaction has committed (:func:`write_stage_lines`): a line then never reports an outcome
    that was rolled back, and writing them (a few hundred per batch) no longer holds the batch's
    row locks and claimed keys, which concurrent batches may be waiting for.
    """
    # Before this transaction writes (and locks) anything: a rebuild waits for indexing transactions.
    neardup_stage.ensure_index(session, neardup_index, neardup_window_days)
    results: dict[str, Outcome] = {}
    todo = _not_done(session, batch.deliveries, results)
    together: list[Outcome] | None = None
    lines: list[StageLine] = []
    if todo:
        failed: list[Outcome] = []
        for attempt in range(1, TOGETHER_ATTEMPTS + 1):
            if attempt > 1:
                todo = _not_done(session, todo, results)
                if not todo:
                    together = []
                    break
            charged = {o.delivery_id for o in failed}
            try:
                attempt_lines: list[StageLine] = []
                with session.begin_nested():
                    together = _process_together(session, [m for m in todo if m.delivery_id not in charged],
                                                 propagate, around, timeouts, failed, neardup_index,
                                                 attempt_lines)
                lines = attempt_lines  # the savepoint is released: these outcomes stand
                break
            except _OneByOne as exc:
                if exc.again and attempt < TOGETHER_ATTEMPTS:
                    log.info("batch_again", reason=str(exc), deliveries=len(todo), attempt=attempt)
                    continue
                log.info("batch_one_by_one", reason=str(exc), deliveries=len(todo))
                break
            except DBAPIError as exc:
                if is_transient(exc):
                    raise
                log.warning("batch_one_by_one", reason="refused", error=repr(exc)[:500],
                            deliveries=len(todo))
                break
        # Deliveries charged (timed out) are not run again in this attempt.
        results.update((o.delivery_id, o) for o in failed)
        if together is None:
            together = [_run_one(session, msg, propagate, around, timeouts, neardup_index)
                        for msg in todo if msg.delivery_id not in results]
        results.update((o.delivery_id, o) for o in together)
    _apply_withdrawals(session, batch, results)
    if stage_lines is None:
        write_stage_lines(lines)
    else:
        stage_lines.extend(lines)
    return [results[msg.delivery_id] for msg in batch.deliveries]


def write_stage_lines(lines: list[StageLine]) -> None:
    """Write the ``stage_completed`` lines :func:`process_batch` held back."""
    info = log.info
    for line in lines:
        info("stage_completed", **line)


def _not_done(session: Session, msgs: list[DeliveryMessage],
              results: dict[str, Outcome]) -> list[DeliveryMessage]:
    """The deliveries not recorded yet; those recorded (by an earlier attempt at a redelivered
    message) go into ``results`` as ``already_processed``."""
    done = queries.processed_deliveries(session, (d.delivery_id for d in msgs))
    todo: list[DeliveryMessage] = []
    for msg in msgs:
        if msg.delivery_id in done:
            log.info("delivery_skipped", outcome="already_processed", status=done[msg.delivery_id],
                     delivery_id=msg.delivery_id, correlation_id=msg.correlation_id, source=msg.source)
            results[msg.delivery_id] = Outcome(msg.delivery_id, "already_processed")
        else:
            todo.append(msg)
    return todo


def _apply_withdrawals(session: Session, batch: IngestBatch, results: dict[str, Outcome]) -> None:
    """A wire version whose publication status is canceled or withheld (NewsML-G2 / NITF
    ``extra["withdrawn"]``) marks every stored version of its guid withdrawn, in this transaction."""
    for msg in batch.deliveries:
        record = msg.record
        if record is None or not record.extra.get("withdrawn") or not record.extra.get("guid"):
            continue
        outcome = results.get(msg.delivery_id)
        own = [outcome.story_id] if outcome is not None and outcome.story_id is not None else []
        ids = queries.mark_withdrawn(session, source=record.source, guid=str(record.extra["guid"]),
                                     story_ids=own)
        log.info("stories_withdrawn", guid=record.extra["guid"], story_ids=ids, delivery_id=msg.delivery_id,
                 pub_status=record.extra.get("pub_status"))


def _run_one(session: Session, msg: DeliveryMessage, propagate: tuple[type[BaseException], ...],
             around: Around | None, timeouts: tuple[type[BaseException], ...],
             neardup_index: CandidateIndex | None = None) -> Outcome:
    with structlog.contextvars.bound_contextvars(delivery_id=msg.delivery_id,
                                                 correlation_id=msg.correlation_id, source=msg.source):
        try:
            with around(msg) if around is not None else nullcontext():
                return process_one(session, msg, propagate=propagate, neardup_index=neardup_index)
        except timeouts:
            return _charged(msg, "timeout")
        except Exception as exc:
            if around is None or is_transient(exc) or isinstance(exc, propagate):
                raise
            return _charged(msg, "error")


def _charged(msg: DeliveryMessage, failure: str) -> Outcome:
    """The outcome of a delivery whose attempt failed (called while its error is handled)."""
    return Outcome(msg.delivery_id, "failed", failure=failure, error=traceback.format_exc(limit=20))


# --- the batch written together ------------------------------------------------------------------


# Attempts at writing a batch together before it runs one delivery at a time. Each attempt after
# a lost race sees the winner's keys, but may lose a new race to the other processes' next
# batches: with two attempts, batches of 200 fell back to one by one twice in 20,000 deliveries
# (and then deadlocked against the concurrent batches five times, 1.3 s each); with four, never.
TOGETHER_ATTEMPTS = 4


class _OneByOne(Exception):
    """The batch cannot be written together: run it delivery by delivery.

    ``again``: the cause was a concurrent batch that has committed since (a key it claimed first,
    a redelivery it recorded; ``INSERT ... ON CONFLICT`` waits for the other transaction before it
    reports the conflict), so the batch written together once more sees it from the start and
    succeeds. Written one by one instead, each delivery's near-duplicate step would take its locks
    and reach the index on its own, interleaved with a concurrent batch's, which can deadlock.
    """

    def __init__(self, reason: str, *, again: bool = False) -> None:
        super().__init__(reason)
        self.again = again


@dataclass(slots=True)
class _Item:
    """One delivery on its way through :func:`_process_together`."""

    msg: DeliveryMessage
    outcome: Outcome
    norm: normalize_stage.Normalized | None = None
    enrichment: dict[str, Any] | None = None
    # The delivery's work computed ahead (embedded mode, worker/precompute.py), if any.
    work: precompute.Work | None = None
    # An exact duplicate of a key holder in the database, or of an earlier delivery of the batch.
    match: dedup.Match | None = None
    after: _Item | None = None
    key: str = ""  # "source_id" | "content", for a duplicate
    claims_source: bool = False
    version: int = 1
    # A processing_error rejection (the pipeline's own quarantine), or an attempt charged.
    error: dict[str, Any] | None = None
    charged: bool = False

    @property
    def live(self) -> bool:
        return self.norm is not None and self.error is None and not self.charged

    @property
    def duplicate(self) -> bool:
        return self.match is not None or self.after is not None

    def source_key(self) -> tuple[str, str]:
        record = self.msg.record
        assert record is not None
        return record.source, record.id


def _classify(items: list[_Item], by_key: dict[tuple[str, str], queries.Holder],
              by_hash: dict[str, queries.Holder]) -> list[_Item]:
    """Exact duplicates, decided in batch order as :func:`dedup.exact` decides them one by one:
    the (source, source id) first, then the content hash; an earlier delivery of the batch holds a
    key it claims. Returns the new stories (the deliveries that claim their content hash)."""
    keys: dict[tuple[str, str], _Item] = {}
    hashes: dict[str, _Item] = {}
    new: list[_Item] = []
    for it in items:
        it.match, it.after, it.key, it.claims_source = None, None, "", False
        assert it.norm is not None
        key, digest = it.source_key(), it.norm.content_hash
        holder = by_key.get(key)
        if holder is not None:
            it.match, it.key = _match(holder, "source_id"), "source_id"
            continue
        if key in keys:
            it.after, it.key = keys[key], "source_id"
            continue
        keys[key], it.claims_source = it, True
        holder = by_hash.get(digest)
        if holder is not None:
            it.match, it.key = _match(holder, "content"), "content"
            continue
        if digest in hashes:
            it.after, it.key = hashes[digest], "content"
            continue
        hashes[digest] = it
        new.append(it)
    return new


def _match(holder: queries.Holder, key: str) -> dedup.Match:
    return dedup.Match(holder.delivery_id, holder.story_id, holder.version, key)


def _process_together(session: Session, todo: list[DeliveryMessage],
                      propagate: tuple[type[BaseException], ...], around: Around | None,
                      timeouts: tuple[type[BaseException], ...],
                      failed: list[Outcome], neardup_index: CandidateIndex | None,
                      lines: list[StageLine]) -> list[Outcome]:
    """The batch through the stages with batch-level queries: one SELECT for the key holders, one
    INSERT each for the stories and their versions, then one INSERT ... ON CONFLICT per key table
    for the claims (the keys already point at the stories they end in), one INSERT for the
    deliveries (with the new stories' near-duplicate signatures). CPU work runs per delivery, under
    ``around``. Raises :class:`_OneByOne` when the batch has to be run one delivery at a time.
    The ``stage_completed`` lines go into ``lines``, not to the log."""
    items = [_Item(msg, Outcome(msg.delivery_id, "rejected")) for msg in todo]

    def step(it: _Item, stage: str, work: Callable[[], None]) -> None:
        """One delivery's own work, under its deadline; a failure rejects or charges it alone."""
        try:
            with around(it.msg, io=False) if around is not None else nullcontext():
                try:
                    work()
                except Exception as exc:
                    if is_transient(exc) or isinstance(exc, propagate):
                        raise
                    with structlog.contextvars.bound_contextvars(delivery_id=it.msg.delivery_id,
                                                                 correlation_id=it.msg.correlation_id,
                                                                 source=it.msg.source):
                        log.error("delivery_failed", stage=stage, error=repr(exc), exc_info=True)
                    it.error = {"code": "processing_error", "message": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=20)}
        except timeouts:
            it.charged = True
            failed.append(_charged(it.msg, "timeout"))
        except Exception as exc:
            if around is None or is_transient(exc) or isinstance(exc, propagate):
                raise
            it.charged = True
            failed.append(_charged(it.msg, "error"))

    # 1. normalize, per delivery
    for it in items:
        record = it.msg.record
        if record is None:
            continue

        # Outside the step's deadline: taking the work computed ahead may wait for the process
        # computing it, which is not the delivery's computation.
        it.work = precompute.take(it.msg.delivery_id, record)

        def normalize(it: _Item = it, record: Delivery = record) -> None:
            if it.work is not None:
                it.norm = it.work.norm
                it.outcome.stage_ms["normalize"] = it.work.ms[0]
                return
            it.norm = _timed(it.outcome, "normalize", normalize_stage.normalize, title=record.title,
                             body=record.body, format=record.format)

        step(it, "normalize", normalize)

    # 2. exact duplicates against the database's key holders and the batch's own order
    started = time.perf_counter()
    live = [it for it in items if it.live]
    by_key, by_hash = queries.key_holders(session, (it.source_key() for it in live),
                                          (it.norm.content_hash for it in live if it.norm is not None))
    new = _classify(live, by_key, by_hash)
    dedup_s = time.perf_counter() - started

    # 3. enrich the new stories, per delivery; one that fails leaves the batch, and the keys it
    # would have claimed go to the next delivery holding them, as in one-by-one processing
    while True:
        for it in new:
            if it.enrichment is None and it.live:
                record = it.msg.record
                assert record is not None and it.norm is not None

                def enrich(it: _Item = it, record: Delivery = record, norm: Any = it.norm) -> None:
                    if it.work is not None:
                        it.enrichment = it.work.enrichment
                        it.outcome.stage_ms["enrich"] = it.work.ms[1]
                        return
                    it.enrichment = _timed(
                        it.outcome, "enrich", enrich_stage.enrich, title=record.title, body=record.body,
                        paragraphs=norm.paragraphs, match_title=norm.match_title, match_body=norm.match_body,
                        published_at=record.published_at, language_hint=record.language)

                step(it, "enrich", enrich)
        if all(it.live for it in new):
            break
        live = [it for it in live if it.live]
        new = _classify(live, by_key, by_hash)

    # 3b. the new stories' near-duplicate signatures, before the batch claims a key: a concurrent
    # batch that needs a key this one claims waits for this transaction's commit, so the CPU work
    # goes first (their story ids are filled in once the stories exist)
    signing = time.perf_counter()
    signed: dict[str, tuple[neardup_stage.Item, bytes]] = {}
    if neardup_index is not None:
        for it in new:
            if it.norm is not None:
                near = _neardup_item(it.msg, it.norm, 0, it.work.signature if it.work else None)
                near.signature_stored = True
                signed[near.delivery_id] = (near, neardup_stage.sign(near).to_bytes())
    signed_ms = (time.perf_counter() - signing) * 1000

    # 4. the new stories, then the keys claimed already pointing at the stories they end in (no
    # UPDATE of the key rows just inserted); a key a concurrent batch won meanwhile makes this
    # delivery its duplicate, and the story it had created is deleted again
    started = time.perf_counter()
    story_ids = queries.create_stories(session, [_story_values(it) for it in new])
    for it in new:
        it.outcome.story_id, it.version = story_ids[it.msg.delivery_id], 1
    persist_s = time.perf_counter() - started
    started = time.perf_counter()
    claimers = [it for it in live if it.claims_source]
    won = queries.claim_source_keys(session, [(*it.source_key(), it.msg.delivery_id) for it in claimers],
                                    stories={it.source_key(): _claimed_story(it) for it in claimers})
    lost = [it for it in claimers if it.source_key() not in won]
    lost_ids = {id(it) for it in lost}
    fp_claims = [it for it in new if id(it) not in lost_ids]
    won_hashes = queries.claim_fingerprints(
        session, [(it.norm.content_hash, it.msg.delivery_id) for it in fp_claims if it.norm is not None],
        stories={it.norm.content_hash: (it.outcome.story_id, 1) for it in fp_claims if it.norm is not None})
    lost_fp = [it for it in fp_claims if it.norm is not None and it.norm.content_hash not in won_hashes]
    if lost or lost_fp:
        raced = {id(it) for it in (*lost, *lost_fp)}
        if any(it.after is not None and id(it.after) in raced for it in live):
            raise _OneByOne("a delivery of the batch depends on a key claimed concurrently", again=True)
        held_key, held_hash = queries.key_holders(
            session, (it.source_key() for it in lost),
            (it.norm.content_hash for it in lost_fp if it.norm is not None))
        for it in lost:
            holder = held_key.get(it.source_key())
            if holder is None:
                raise _OneByOne("a lost key claim has no holder")
            it.match, it.key, it.claims_source = _match(holder, "source_id"), "source_id", False
        for it in lost_fp:
            assert it.norm is not None
            holder = held_hash.get(it.norm.content_hash)
            if holder is None:
                raise _OneByOne("a lost content claim has no holder")
            it.match, it.key = _match(holder, "content"), "content"
        # The source keys won by deliveries that lost their content claim point at the holder's
        # story; then the stories of the deliveries that turned out duplicates go.
        queries.attach_keys_many(session, [(*it.source_key(), *_claimed_story(it)) for it in lost_fp], [])
        queries.delete_stories(session, [story_ids[it.msg.delivery_id] for it in new if it.duplicate])
        new = [it for it in new if not it.duplicate]
    dedup_s += time.perf_counter() - started

    # 5. persist every delivery's outcome
    started = time.perf_counter()
    for it in new:
        it.outcome.status = "new"
    for it in live:
        if not it.duplicate:
            continue
        if it.match is not None:
            story_id, it.version, duplicate_of = it.match.story_id, it.match.version, it.match.delivery_id
        else:
            assert it.after is not None
            earlier = it.after
            story_id, it.version = earlier.outcome.story_id, earlier.version
            duplicate_of = earlier.msg.delivery_id
        it.outcome.status, it.outcome.story_id, it.outcome.duplicate_of = "duplicate", story_id, duplicate_of
    # The new stories' near-duplicate signatures go in with their deliveries' rows (the index is
    # rebuilt from them), not in an UPDATE of the rows just inserted.
    # (only the deliveries still new: one that lost a key claim stores no signature)
    signatures: dict[str, bytes] = {}
    near_items: list[neardup_stage.Item] = []
    for it in new:
        if it.msg.delivery_id in signed and it.outcome.story_id is not None:
            near, signature = signed[it.msg.delivery_id]
            near.story_id = it.outcome.story_id
            near_items.append(near)
            signatures[near.delivery_id] = signature
    rows = [_delivery_values(it, signatures.get(it.msg.delivery_id)) for it in items if not it.charged]
    stored = queries.insert_deliveries(session, rows)
    if len(stored) != len(rows):
        raise _OneByOne("a delivery of the batch was recorded meanwhile", again=True)
    persist_s += time.perf_counter() - started
    persist_ms = round(persist_s * 1000 / max(len(rows), 1), 3)

    # 5b. near-duplicates: a new story may be the same story as a stored one (or an earlier one of
    # the batch); it is then folded into that story, and the stories it links are merged
    folded: dict[int, int] = {}
    neardup = neardup_stage.apply(session, neardup_index, near_items, moved=folded, signed_ms=signed_ms)
    for it in new:
        decision = neardup.get(it.msg.delivery_id)
        if decision is None or decision.status == "new":
            continue
        it.outcome.status, it.outcome.duplicate_of = decision.status, decision.duplicate_of
        it.version = decision.version
    for it in live:
        # deliveries of a folded or merged story (exact duplicates too) belong to the story it went into
        if it.outcome.story_id in folded:
            it.outcome.story_id = folded[it.outcome.story_id]
    dedup_ms = round(dedup_s * 1000 / max(len(live), 1), 3)

    # 6. one summary line per stage per delivery, held back until the transaction commits (see
    # process_batch); the batch-level stages report each delivery's share
    outcomes: list[Outcome] = []
    for it in items:
        if it.charged:
            continue
        outcomes.append(it.outcome)
        if it.error is not None:
            continue  # delivery_failed was logged when it happened
        context = {"delivery_id": it.msg.delivery_id, "correlation_id": it.msg.correlation_id,
                   "source": it.msg.source}
        if it.msg.rejected is not None:
            it.outcome.stage_ms["persist"] = persist_ms
            lines.append(dict(stage="persist", outcome="rejected", duration_ms=persist_ms, story_id=None,
                              **context))
            continue
        it.outcome.stage_ms["dedup"] = dedup_ms
        it.outcome.stage_ms["persist"] = persist_ms
        story_id = it.outcome.story_id
        lines.append(dict(stage="normalize", outcome="ok", duration_ms=it.outcome.stage_ms["normalize"],
                          story_id=None, **context))
        lines.append(dict(stage="dedup", outcome=f"duplicate_by_{it.key}" if it.duplicate else "new",
                          duration_ms=dedup_ms, story_id=story_id if it.duplicate else None, batch=len(live),
                          **context))
        if not it.duplicate:
            lines.append(dict(stage="enrich", outcome="ok", duration_ms=it.outcome.stage_ms["enrich"],
                              story_id=None, **context))
            decision = neardup.get(it.msg.delivery_id)
            if decision is not None:
                it.outcome.stage_ms["neardup"] = decision.duration_ms
                lines.append(dict(stage="neardup", outcome=decision.status, duration_ms=decision.duration_ms,
                                  story_id=decision.story_id, duplicate_of=decision.duplicate_of, **context))
        lines.append(dict(stage="persist", outcome=it.outcome.status, duration_ms=persist_ms,
                          story_id=story_id, batch=len(rows), **context))
    return outcomes


def _claimed_story(it: _Item) -> tuple[int | None, int]:
    """The (story id, version) a delivery's claimed source key points at: its own new story, or
    for a duplicate by content the story (and version) of the delivery it duplicates."""
    if it.match is not None:
        story_id = it.match.story_id
        return story_id, it.match.version if story_id is not None else 1
    if it.after is not None:
        return it.after.outcome.story_id, it.after.version
    return it.outcome.story_id, 1


def _story_values(it: _Item) -> dict[str, Any]:
    record, norm, enrichment = it.msg.record, it.norm, it.enrichment
    assert record is not None and norm is not None and enrichment is not None
    return dict(
        canonical_delivery_id=it.msg.delivery_id, source=record.source, source_id=record.id,
        title=record.title, body=record.body, paragraphs=norm.paragraphs,
        normalized_title=norm.match_title, normalized_body=norm.match_body,
        content_hash=norm.content_hash, url=record.url, published_at=record.published_at,
        language=enrichment.get("language") or record.language, enrichment=enrichment,
        enrichment_version=enrich_stage.ENRICHMENT_VERSION, pipeline_version=PIPELINE_VERSION,
    )


def _delivery_values(it: _Item, signature: bytes | None = None) -> dict[str, Any]:
    msg, record = it.msg, it.msg.record
    values: dict[str, Any] = dict(
        id=msg.delivery_id, source=msg.source, run_id=msg.run_id, correlation_id=msg.correlation_id,
        received_at=msg.received_at, record=_record_fields(msg),
    )
    if record is None:
        assert msg.rejected is not None
        return values | dict(source_id=msg.rejected.source_id, format=msg.rejected.format, status="rejected",
                             raw=msg.rejected.raw,
                             error={"code": msg.rejected.code, "message": msg.rejected.message})
    values |= dict(source_id=record.id, format=record.format, title=record.title, body=record.body)
    if it.error is not None:
        return values | dict(status="rejected", error=it.error)
    assert it.norm is not None
    return values | dict(status=it.outcome.status, story_id=it.outcome.story_id, version=it.version,
                         duplicate_of=it.outcome.duplicate_of, content_hash=it.norm.content_hash,
                         neardup_signature=signature)
