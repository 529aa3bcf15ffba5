"""warm(): the gazetteer and language model are built once and left out of the cyclic collector."""

from __future__ import annotations

import gc

from worker.enrichment.gazetteer import load
from worker.enrichment.text import identifier
from worker.stages.enrich import warm


def test_warm_freezes_what_it_loaded() -> None:
    try:
        warm()
        gazetteer = load()
        assert identifier() is identifier()
        assert gc.get_freeze_count() > 0
        # Frozen objects are in the permanent generation, which collections never walk.
        tracked = {id(o) for o in gc.get_objects()}
        assert id(gazetteer.forms) not in tracked
        assert id(gazetteer) not in tracked
        assert load() is gazetteer
    finally:
        gc.unfreeze()
