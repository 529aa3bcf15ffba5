"""The near-duplicate index shared by every worker, in Redis: LSH band buckets and signatures.

Layout (every key under ``{prefix}:nd:``, so one prefix holds one index):

* ``meta`` (hash): ``generation``, a random token set when the index is (re)built. Its absence
  means Redis lost the index (restart without persistence, FLUSHDB, eviction): every call then
  raises :class:`IndexLost` until :meth:`NearDupIndex.rebuild` has reloaded it from the database,
  so that no worker silently matches against an empty index.
* ``b:{epoch}:{shard}`` (hash): band key (4 bytes) -> packed 4-byte sequence numbers of the stories
  in that bucket. Buckets are spread over ``2**shard_bits`` small hashes per epoch so that each
  stays in Redis' compact listpack encoding (about 13 bytes per entry instead of about 70 for a
  key or a hashtable entry): https://redis.io/docs/latest/operate/oss_and_stack/management/optimization/memory-optimization/
* ``r:{epoch}:{seq // 64}`` (hash): sequence number -> the story's reference and signature.
* ``seq`` (string): the counter that numbers stories, so buckets hold 4 bytes per story instead
  of a 36-character delivery id.

Time: stories fall into *epochs* of two windows by publication time. A story is looked up in the
(at most two) epochs that overlap its time plus or minus the window, and added to its own; each
key's TTL is set to three windows on every write, so an epoch disappears once no story can reach it
any more (Redis 7.0 has no per-field expiry). :func:`compare` enforces the exact window.

Atomicity: :meth:`NearDupIndex.lookup_and_add` (and its micro-batch form) runs one Lua script, so
candidate lookup and insertion are one step for Redis: of two workers adding near-identical
stories at the same moment, the second always finds the first. The database stays the authority
(see :mod:`worker.neardup`): the index only proposes candidates and is rebuilt from the
signatures stored with the deliveries.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import redis

from worker.neardup.signature import Signature

_MINUTES_PER_DAY = 24 * 60
_RECORDS_PER_KEY = 64

# One script does lookup, insertion or both, for one story or a micro-batch of stories in order
# (each sees the ones before it). It builds key names from the prefix it is given: every key of one
# index shares the prefix, which carries a {hash tag} so that all of them live in one Redis Cluster
# slot. Returns {-1} when the index is absent (and the mode is not rebuild); otherwise
# {generation, n, then per story: seq (0 when not added), count, count x (seq, hits, record)}.
_SCRIPT = r"""
local meta = KEYS[1]
local mode = ARGV[1]
local prefix = ARGV[2]
local ttl = tonumber(ARGV[3])
local max_candidates = tonumber(ARGV[4])
local n = tonumber(ARGV[5])

local generation = redis.call('HGET', meta, 'generation')
if not generation then
  if mode ~= 'rebuild' then return {-1} end
  generation = ''
end
local do_lookup = mode == 'lookup' or mode == 'both'
local do_add = mode ~= 'lookup'

local out = {generation, n}
for s = 0, n - 1 do
  local base = 6 + 5 * s
  local lookup_epochs, own_epoch = ARGV[base], ARGV[base + 1]
  local shards, fields, record = ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local shard_list = {}
  for x in string.gmatch(shards, '[^,]+') do shard_list[#shard_list + 1] = x end

  local hits, order, own = {}, {}, {}
  if do_lookup then
    for epoch in string.gmatch(lookup_epochs, '[^,]+') do
      for i, shard in ipairs(shard_list) do
        local bkey = prefix .. 'b:' .. epoch .. ':' .. shard
        local value = redis.call('HGET', bkey, string.sub(fields, 4 * i - 3, 4 * i))
        if epoch == own_epoch then own[i] = value end
        if value then
          for j = 1, #value, 4 do
            local key = epoch .. ':' .. struct.unpack('>I4', string.sub(value, j, j + 3))
            if hits[key] then
              hits[key] = hits[key] + 1
            else
              hits[key] = 1
              order[#order + 1] = key
            end
          end
        end
      end
    end
  end

  local seq = 0
  if do_add then
    seq = redis.call('INCR', prefix .. 'seq')
    local packed = struct.pack('>I4', seq)
    local rkey = prefix .. 'r:' .. own_epoch .. ':' .. math.floor(seq / 64)
    redis.call('HSET', rkey, seq, record)
    redis.call('PEXPIRE', rkey, ttl)
    for i, shard in ipairs(shard_list) do
      local bkey = prefix .. 'b:' .. own_epoch .. ':' .. shard
      local field = string.sub(fields, 4 * i - 3, 4 * i)
      local value = own[i]
      if value == nil and not do_lookup then value = redis.call('HGET', bkey, field) end
      redis.call('HSET', bkey, field, (value or '') .. packed)
      redis.call('PEXPIRE', bkey, ttl)
    end
  end

  -- Most band hits first; ties by epoch and sequence number, so the cut is deterministic.
  table.sort(order, function(a, b)
    if hits[a] ~= hits[b] then return hits[a] > hits[b] end
    return a < b
  end)
  out[#out + 1] = seq
  local count_at = #out + 1
  out[count_at] = 0
  local count = 0
  for i = 1, math.min(#order, max_candidates) do
    local key = order[i]
    local sep = string.find(key, ':')
    local epoch = string.sub(key, 1, sep - 1)
    local cand = tonumber(string.sub(key, sep + 1))
    local rec = redis.call('HGET', prefix .. 'r:' .. epoch .. ':' .. math.floor(cand / 64), cand)
    if rec then
      out[#out + 1] = cand
      out[#out + 1] = hits[key]
      out[#out + 1] = rec
      count = count + 1
    end
  end
  out[count_at] = count
end
return out
"""


class IndexLost(RuntimeError):
    """The index is not in Redis: it must be rebuilt from the database before use."""


class RebuildInProgress(RuntimeError):
    """Another process holds the rebuild lock."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A story the index proposes for a signature."""

    ref: str
    signature: Signature
    band_hits: int
    seq: int


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What :meth:`NearDupIndex.lookup_and_add` found, and the index generation it worked on."""

    candidates: list[Candidate]
    generation: str
    seq: int


class CandidateIndex(Protocol):
    """What the near-duplicate stage needs of an index: :class:`NearDupIndex` (shared, in Redis) or
    :class:`worker.neardup.local.LocalNearDupIndex` (the embedded mode's, in one process)."""

    def present(self) -> bool: ...

    def rebuild(self, items: Iterable[tuple[str, Signature]], *, lock_seconds: int = 600,
                batch: int = 200) -> int: ...

    def lookup_and_add_many(self, stories: Sequence[tuple[str, Signature]]) -> list[LookupResult]: ...


def encode_ref(ref: str) -> bytes:
    """A story reference in few bytes: a UUID as 16 bytes, anything else as UTF-8."""
    try:
        if len(ref) == 36:
            return b"\x01" + uuid.UUID(ref).bytes
    except ValueError:
        pass
    raw = ref.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("a story reference is at most 255 bytes")
    return b"\x00" + bytes([len(raw)]) + raw


def decode_ref(data: bytes) -> tuple[str, int]:
    """Inverse of :func:`encode_ref`: the reference and the number of bytes it took."""
    if data[0] == 1:
        return str(uuid.UUID(bytes=bytes(data[1:17]))), 17
    n = data[1]
    return bytes(data[2 : 2 + n]).decode("utf-8"), 2 + n


# Decoded index records, by their bytes. The same stored stories come back as candidates of story
# after story (a day's running stories, template reports): on the corpus 80% of the candidates a
# worker decoded were among the last 4,096 it had decoded. Signatures are immutable, so one
# decoded object serves every lookup that returns those bytes.
RECORD_CACHE = 4096


@lru_cache(maxsize=RECORD_CACHE)
def decode_record(data: bytes) -> tuple[str, Signature]:
    """An index record (:func:`encode_ref` + the signature's record form): reference and signature."""
    ref, used = decode_ref(data)
    return ref, Signature.from_bytes(data[used:])


class NearDupIndex:
    """LSH candidates for near-duplicate signatures, shared by all workers through Redis.

    ``rows`` x ``bands`` MinHash values of the body make the body bands (a pair with body Jaccard
    ``J`` shares a band with probability ``1 - (1 - J**rows)**bands``); ``lede_bands`` more come
    from the lede, which is how a flash finds its story. ``expected_stories`` (per window) sizes the
    bucket shards so that Redis keeps each small and compact; correctness does not depend on it.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        window_days: int = 7,
        *,
        rows: int = 1,
        bands: int = 16,
        lede_bands: int = 2,
        expected_stories: int = 100_000,
        max_candidates: int = 64,
    ) -> None:
        if window_days < 1:
            raise ValueError("window_days must be at least 1")
        self.client = client
        self.prefix = f"{prefix}:nd:{{{prefix}}}:"
        self.window_days = window_days
        self.rows = rows
        self.bands = bands
        self.lede_bands = lede_bands
        self.max_candidates = max_candidates
        per_epoch_entries = max(1, expected_stories) * (bands + lede_bands)
        self.shard_bits = max(0, math.ceil(math.log2(per_epoch_entries / 64)))
        # Epochs span two windows, so a lookup (its time plus or minus a window) touches at most two.
        # Every write sets the key's TTL to three windows: a key is written until its epoch ends and
        # read until a window after that.
        self.epoch_minutes = 2 * window_days * _MINUTES_PER_DAY
        self.ttl_ms = 3 * window_days * _MINUTES_PER_DAY * 60_000
        self._meta = self.prefix + "meta"
        self._script = client.register_script(_SCRIPT)

    # -- keys ------------------------------------------------------------------------------------

    def _epoch(self, minute: int) -> int:
        return minute // self.epoch_minutes

    def _lookup_epochs(self, minute: int) -> str:
        span = self.window_days * _MINUTES_PER_DAY
        return ",".join(
            str(e) for e in range(self._epoch(max(0, minute - span)), self._epoch(minute + span) + 1)
        )

    def _band_args(self, sig: Signature) -> tuple[str, bytes]:
        keys = sig.band_keys(self.rows, self.bands, self.lede_bands)
        if self.shard_bits:
            shift = 32 - self.shard_bits
            shards = ",".join([str(k >> shift) for k in keys])
        else:
            shards = ",".join(["0"] * len(keys))
        return shards, struct.pack(f">{len(keys)}I", *keys)

    def _call(self, mode: str, stories: Sequence[tuple[Signature, bytes]], client: Any = None) -> Any:
        args: list[Any] = [mode, self.prefix, self.ttl_ms, self.max_candidates, len(stories)]
        for sig, record in stories:
            minute = sig.published_minute or 1
            shards, fields = self._band_args(sig)
            args += [self._lookup_epochs(minute), str(self._epoch(minute)), shards, fields, record]
        return self._script(keys=[self._meta], args=args, client=client)

    def _parse(self, reply: list[Any]) -> list[LookupResult]:
        if reply and reply[0] == -1:
            raise IndexLost(f"the near-duplicate index under {self.prefix!r} is missing: rebuild it")
        generation = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        results = []
        pos = 2
        for _ in range(int(reply[1])):
            seq, count = int(reply[pos]), int(reply[pos + 1])
            pos += 2
            out = []
            for _ in range(count):
                ref, sig = decode_record(reply[pos + 2])
                out.append(
                    Candidate(ref=ref, signature=sig, band_hits=int(reply[pos + 1]), seq=int(reply[pos]))
                )
                pos += 3
            results.append(LookupResult(candidates=out, generation=generation, seq=seq))
        return results

    # -- API -------------------------------------------------------------------------------------

    def candidates(self, sig: Signature) -> list[Candidate]:
        """Stories sharing at least one band with ``sig`` within the window, most band hits first."""
        return self._parse(self._call("lookup", [(sig, b"")]))[0].candidates

    def add(self, ref: str, sig: Signature) -> None:
        """Index ``sig`` under ``ref`` (without looking anything up)."""
        self._parse(self._call("add", [(sig, encode_ref(ref) + sig.to_bytes(record=True))]))

    def lookup_and_add(self, ref: str, sig: Signature) -> LookupResult:
        """Candidates for ``sig``, and ``sig`` added under ``ref``, in one atomic step.

        Candidates indexed under ``ref`` itself (a redelivery) are left out.
        """
        return self.lookup_and_add_many([(ref, sig)])[0]

    def lookup_and_add_many(self, stories: Sequence[tuple[str, Signature]]) -> list[LookupResult]:
        """:meth:`lookup_and_add` for a micro-batch, in order, in one atomic step and one round trip.

        Each story's candidates include the batch's earlier stories, exactly as if they had been
        added one call at a time.
        """
        if not stories:
            return []
        replies = self._parse(
            self._call("both", [(sig, encode_ref(ref) + sig.to_bytes(record=True)) for ref, sig in stories])
        )
        return [
            LookupResult([c for c in res.candidates if c.ref != ref], res.generation, res.seq)
            for (ref, _sig), res in zip(stories, replies, strict=True)
        ]

    lookup_and_add_atomic = lookup_and_add

    def generation(self) -> str | None:
        """The current index generation, or None when the index is absent."""
        value = self.client.hget(self._meta, "generation")
        return value.decode() if isinstance(value, bytes) else value  # type: ignore[return-value]

    def present(self) -> bool:
        return bool(self.client.exists(self._meta))

    def redis_keys(self) -> list[bytes]:
        """Every key of this index (SCAN: does not block Redis)."""
        return list(
            self.client.scan_iter(match=self.prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=2000)
        )

    def drop(self) -> int:
        """Delete every key of this index; returns how many were deleted."""
        keys = self.redis_keys()
        for i in range(0, len(keys), 1000):
            self.client.unlink(*keys[i : i + 1000])
        return len(keys)

    def rebuild(
        self, items: Iterable[tuple[str, Signature]], *, lock_seconds: int = 600, batch: int = 200
    ) -> int:
        """Reload the index from ``items`` (reference, signature), typically read from the database.

        The index is marked absent first, so workers stop (and retry) instead of matching against a
        half-loaded index; it is marked present, with a new generation, once every item is in. Only
        one process rebuilds at a time (a Redis lock); returns the number of stories indexed.
        """
        lock = self.prefix + "rebuild-lock"
        token = uuid.uuid4().hex
        if not self.client.set(lock, token, nx=True, ex=lock_seconds):
            raise RebuildInProgress(f"the near-duplicate index under {self.prefix!r} is being rebuilt")
        try:
            self.client.delete(self._meta)
            for key in self.redis_keys():
                if key.decode() != lock:
                    self.client.unlink(key)
            count = 0
            chunk: list[tuple[Signature, bytes]] = []
            for ref, sig in items:
                chunk.append((sig, encode_ref(ref) + sig.to_bytes(record=True)))
                count += 1
                if len(chunk) == batch:
                    self._call("rebuild", chunk)
                    chunk = []
            if chunk:
                self._call("rebuild", chunk)
            self.client.hset(self._meta, "generation", uuid.uuid4().hex)
            return count
        finally:
            if self.client.get(lock) == token.encode():
                self.client.delete(lock)

    def ensure(self) -> bool:
        """Mark an empty index present (a new deployment); False if it already was."""
        return bool(self.client.hsetnx(self._meta, "generation", uuid.uuid4().hex))
