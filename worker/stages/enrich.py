"""Stage 3, enrich: what newsrooms search and filter by, computed offline.

The work is in :mod:`worker.enrichment`; ``ENRICHMENT_VERSION`` is stored on every story so that
stories enriched by an older version can be found and re-enriched (``akhbar replay --from-db``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

from worker.enrichment import ENRICHMENT_VERSION, enrich
from worker.enrichment import warm as _build

__all__ = ["ENRICHMENT_VERSION", "enrich", "warm"]


def warm() -> None:
    """Build the gazetteer and load the language model, then make them cheap to share.

    Called in a worker's main process before it forks its pool (and in each pool process when the
    main process did not). What is loaded then is frozen out of the cyclic garbage collector (``gc.freeze``):
    a collection in a pool process would otherwise write to the header of every one of those
    objects and copy, page by page, memory the processes share. With it, a pool process's unique
    memory after 1,500 stories was 30 MB instead of 68 MB. The heap the build freed goes back to
    the system (``malloc_trim``, about 15 MB) instead of being inherited by every process.
    """
    _build()
    gc.collect()
    gc.freeze()
    _trim_heap()


def _trim_heap() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
