"""Stage 3, enrich: what newsrooms search and filter by, computed offline.

The work is in :mod:`worker.enrichment`; ``ENRICHMENT_VERSION`` is stored on every story so that
stories enriched by an older version can be found and re-enriched (``akhbar replay --from-db``).
"""

from __future__ import annotations

from worker.enrichment import ENRICHMENT_VERSION, enrich, warm

__all__ = ["ENRICHMENT_VERSION", "enrich", "warm"]
