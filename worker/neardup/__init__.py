"""Near-duplicates and story versions: signatures, pairwise verdicts and the shared Redis index.

Plain functions and one Redis-backed class, no Celery and no SQL, so that the persist stage can call
them per delivery inside its database transaction:

* :func:`signature` turns a story's match forms into a compact :class:`Signature` (about 300 bytes;
  ``to_bytes()`` for the database column, ``to_bytes(record=True)`` is what Redis keeps);
* :func:`compare` says whether two signatures are the same story and, if so, whether the newer one
  is a ``near_duplicate`` or an ``update`` (with the paragraphs added and removed);
* :class:`NearDupIndex` proposes candidates from Redis and adds the story in one atomic step
  (:meth:`NearDupIndex.lookup_and_add`, or ``lookup_and_add_many`` for a micro-batch), and is
  rebuilt from the database when Redis has lost it.

The database stays the authority. Per delivery that is not an exact duplicate, the persist stage,
inside the delivery's transaction:

1. computes ``sig = signature(...)`` and stores ``sig.to_bytes()`` with the delivery (the rebuild
   reads it back);
2. on PostgreSQL, takes ``pg_advisory_xact_lock_shared(REBUILD_KEY)`` (a rebuild takes it
   exclusively, so it waits for in-flight transactions and then sees their rows) and
   ``pg_advisory_xact_lock(key(delivery_id))`` (held until commit), then calls
   ``index.lookup_and_add(delivery_id, sig)``. :class:`IndexLost` means Redis lost the index: roll
   back, rebuild (:meth:`NearDupIndex.rebuild` over the stored signatures of the last two windows,
   under the exclusive lock) and retry;
3. for each candidate, takes ``pg_advisory_xact_lock_shared(key(candidate.ref))``: a candidate added
   by a transaction still running is waited for (its row becomes visible, or it never existed and
   the candidate is dropped). No cycle can form: a delivery only ever waits for deliveries that
   reached Redis before it;
4. keeps the candidates whose :func:`compare` verdict is ``same_story``; none: a new story. Else the
   best (highest ``score``) gives the label and ``duplicate_of``, and the delivery joins its story;
   when the matches belong to several stories, those are merged into the one whose canonical
   delivery is earliest by (published_at, delivery id). Groups are thus the connected components of
   the same-story relation, which lookup-and-add makes independent of arrival order and of
   concurrency: of two same-story deliveries, the later one to reach Redis finds the other;
5. after commit, if ``index.generation()`` differs from the generation the lookup ran on, the index
   was rebuilt meanwhile and may lack this delivery: look up and add again (and apply the matches).

On SQLite (one writer at a time) the locks are not needed.
"""

from worker.neardup.compare import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    Verdict,
    compare,
    compare_many,
    features,
    paragraph_diff,
)
from worker.neardup.index import (
    Candidate,
    CandidateIndex,
    IndexLost,
    LookupResult,
    NearDupIndex,
    RebuildInProgress,
)
from worker.neardup.signature import Signature, signature

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Candidate",
    "CandidateIndex",
    "IndexLost",
    "LookupResult",
    "NearDupIndex",
    "RebuildInProgress",
    "Signature",
    "Thresholds",
    "Verdict",
    "compare",
    "compare_many",
    "features",
    "paragraph_diff",
    "signature",
]
