"""The near-duplicate index of the embedded mode: the LSH band buckets in this process's memory.

The embedded mode (no Redis: ``akhbar replay`` on a SQLite file, one in-process worker) has no
shared index; :class:`LocalNearDupIndex` stands in for :class:`worker.neardup.NearDupIndex` with
the same interface and the same answers, so the near-duplicate stage runs unchanged:

* the same band keys (:meth:`Signature.band_keys`, with the same ``rows``, ``bands`` and
  ``lede_bands``), the same epochs of two windows by publication minute, looked up over the time
  plus or minus a window, the same candidate order (most band hits first, ties by
  ``"epoch:seq"`` as Redis compares them) and cut (``max_candidates``), candidates carrying the
  signature as Redis keeps it (``to_bytes(record=True)``: 8-bit body values, no band minima), and
  a delivery's own earlier entries left out of its candidates;
* window expiry: an epoch is dropped once nothing was written to it for three windows, as Redis
  expires the keys of an epoch three windows after their last write;
* absent when the process starts: the first batch (``ensure_index``) rebuilds it from the
  signatures stored in the database, exactly as after Redis lost the shared index. While a rebuild
  runs the index is absent (calls raise :class:`IndexLost`) and a second rebuild raises
  :class:`RebuildInProgress`.

Nothing of it outlives the process; the database stays the authority. Every call holds one lock,
so a lookup and its insertion are one step for every thread of the process (the embedded worker
is one thread, but nothing here relies on it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from worker.neardup.index import Candidate, IndexLost, LookupResult, RebuildInProgress
from worker.neardup.signature import Signature

_MINUTES_PER_DAY = 24 * 60


@dataclass(slots=True)
class _Epoch:
    """One epoch's stories: band key -> sequence numbers, and sequence number -> (ref, record).

    Most buckets hold one story: such a bucket is the bare sequence number (about a third of the
    memory of a list), a list from its second story on; the record is the bytes Redis would keep
    (about 250 bytes, a fifth of a decoded :class:`Signature`)."""

    buckets: dict[int, int | list[int]] = field(default_factory=dict)
    records: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    written: float = 0.0  # clock time of the last write


@dataclass(slots=True)
class _State:
    epochs: dict[int, _Epoch] = field(default_factory=dict)
    seq: int = 0


class LocalNearDupIndex:
    """LSH candidates for near-duplicate signatures, in memory, for one process.

    Parameters as for :class:`worker.neardup.NearDupIndex` (``expected_stories`` only sizes Redis
    shards and is not needed here); ``clock`` (seconds, monotonic) times the window expiry.
    """

    def __init__(
        self,
        window_days: int = 7,
        *,
        rows: int = 1,
        bands: int = 16,
        lede_bands: int = 2,
        max_candidates: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_days < 1:
            raise ValueError("window_days must be at least 1")
        self.window_days = window_days
        self.rows = rows
        self.bands = bands
        self.lede_bands = lede_bands
        self.max_candidates = max_candidates
        self.epoch_minutes = 2 * window_days * _MINUTES_PER_DAY
        self.ttl_seconds = 3 * window_days * _MINUTES_PER_DAY * 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._rebuild_lock = threading.Lock()
        self._state = _State()
        self._generation: str | None = None

    # -- epochs ----------------------------------------------------------------------------------

    def _epoch(self, minute: int) -> int:
        return minute // self.epoch_minutes

    def _lookup_epochs(self, minute: int) -> range:
        span = self.window_days * _MINUTES_PER_DAY
        return range(self._epoch(max(0, minute - span)), self._epoch(minute + span) + 1)

    def _expire(self, state: _State, now: float) -> None:
        stale = [e for e, epoch in state.epochs.items() if now - epoch.written > self.ttl_seconds]
        for e in stale:
            del state.epochs[e]

    # -- one story -------------------------------------------------------------------------------

    def _one(self, state: _State, ref: str, sig: Signature, *, lookup: bool, add: bool,
             now: float) -> tuple[int, list[Candidate]]:
        minute = sig.published_minute or 1
        keys = sig.band_keys(self.rows, self.bands, self.lede_bands)
        hits: dict[tuple[int, int], int] = {}
        if lookup:
            for e in self._lookup_epochs(minute):
                epoch = state.epochs.get(e)
                if epoch is None:
                    continue
                for key in keys:
                    bucket = epoch.buckets.get(key)
                    if bucket is None:
                        continue
                    for seq in (bucket,) if isinstance(bucket, int) else bucket:
                        hits[(e, seq)] = hits.get((e, seq), 0) + 1
        seq = 0
        if add:
            state.seq += 1
            seq = state.seq
            own = self._epoch(minute)
            epoch = state.epochs.get(own)
            if epoch is None:
                epoch = state.epochs[own] = _Epoch()
            epoch.records[seq] = (ref, sig.to_bytes(record=True))
            buckets = epoch.buckets
            for key in dict.fromkeys(keys):
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = seq
                elif isinstance(bucket, int):
                    buckets[key] = [bucket, seq]
                else:
                    bucket.append(seq)
            epoch.written = now
        # Most band hits first; ties in the order Redis' script sorts them (the string "epoch:seq").
        order = sorted(hits, key=lambda es: (-hits[es], f"{es[0]}:{es[1]}"))[: self.max_candidates]
        candidates = []
        for e, cand in order:
            found = state.epochs.get(e)
            record = found.records.get(cand) if found is not None else None
            if record is not None:
                candidates.append(Candidate(ref=record[0], signature=Signature.from_bytes(record[1]),
                                            band_hits=hits[(e, cand)], seq=cand))
        return seq, candidates

    def _run(self, stories: Sequence[tuple[str, Signature]], *, lookup: bool,
             add: bool) -> list[LookupResult]:
        with self._lock:
            generation = self._generation
            if generation is None:
                raise IndexLost("the embedded near-duplicate index is absent: rebuild it")
            now = self._clock()
            self._expire(self._state, now)
            out = []
            for ref, sig in stories:
                seq, candidates = self._one(self._state, ref, sig, lookup=lookup, add=add, now=now)
                out.append(LookupResult(candidates, generation, seq))
            return out

    # -- API (that of NearDupIndex) ---------------------------------------------------------------

    def candidates(self, sig: Signature) -> list[Candidate]:
        """Stories sharing at least one band with ``sig`` within the window, most band hits first."""
        return self._run([("", sig)], lookup=True, add=False)[0].candidates

    def add(self, ref: str, sig: Signature) -> None:
        """Index ``sig`` under ``ref`` (without looking anything up)."""
        self._run([(ref, sig)], lookup=False, add=True)

    def lookup_and_add(self, ref: str, sig: Signature) -> LookupResult:
        """Candidates for ``sig``, and ``sig`` added under ``ref``, in one step.

        Candidates indexed under ``ref`` itself (a redelivery) are left out.
        """
        return self.lookup_and_add_many([(ref, sig)])[0]

    def lookup_and_add_many(self, stories: Sequence[tuple[str, Signature]]) -> list[LookupResult]:
        """:meth:`lookup_and_add` for a micro-batch, in order, in one step: each story's candidates
        include the batch's earlier stories."""
        if not stories:
            return []
        replies = self._run(stories, lookup=True, add=True)
        return [
            LookupResult([c for c in res.candidates if c.ref != ref], res.generation, res.seq)
            for (ref, _sig), res in zip(stories, replies, strict=True)
        ]

    lookup_and_add_atomic = lookup_and_add

    def generation(self) -> str | None:
        """The current index generation, or None when the index is absent."""
        with self._lock:
            return self._generation

    def present(self) -> bool:
        return self.generation() is not None

    def __len__(self) -> int:
        """Stories indexed (in epochs not yet expired)."""
        with self._lock:
            return sum(len(epoch.records) for epoch in self._state.epochs.values())

    def drop(self) -> int:
        """Forget every story and mark the index absent; returns how many stories were dropped."""
        with self._lock:
            count = sum(len(epoch.records) for epoch in self._state.epochs.values())
            self._state, self._generation = _State(), None
            return count

    def rebuild(self, items: Iterable[tuple[str, Signature]], *, lock_seconds: int = 600,
                batch: int = 200) -> int:
        """Reload the index from ``items`` (reference, signature), typically read from the database.

        The index is absent while the items are read (calls raise :class:`IndexLost`) and present,
        with a new generation, once every item is in; a concurrent rebuild raises
        :class:`RebuildInProgress`. ``lock_seconds`` and ``batch`` are accepted for the interface
        of :meth:`NearDupIndex.rebuild` and not needed here. Returns the number of stories indexed.
        """
        del lock_seconds, batch
        if not self._rebuild_lock.acquire(blocking=False):
            raise RebuildInProgress("the embedded near-duplicate index is being rebuilt")
        try:
            with self._lock:
                self._state, self._generation = _State(), None
            state = _State()
            now = self._clock()
            count = 0
            for ref, sig in items:
                self._one(state, ref, sig, lookup=False, add=True, now=now)
                count += 1
            with self._lock:
                self._state, self._generation = state, uuid.uuid4().hex
            return count
        finally:
            self._rebuild_lock.release()

    def ensure(self) -> bool:
        """Mark an empty index present; False if it already was."""
        with self._lock:
            if self._generation is not None:
                return False
            self._generation = uuid.uuid4().hex
            return True
