"""Helpers for the enrichment tests: enrich a headline and body the way the pipeline does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from worker.enrichment import enrich, warm
from worker.stages.normalize import normalize

Enrich = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def enriched() -> Enrich:
    """A function (title, body, published_at=None) -> enrichment, gazetteer built once."""
    warm()

    def run(title: str | None, body: str, published_at: datetime | None = None,
            language_hint: str | None = None, format: str = "json") -> dict[str, Any]:
        n = normalize(title=title, body=body, format=format)
        return enrich(title=title, body=body, paragraphs=n.paragraphs, match_title=n.match_title,
                      match_body=n.match_body, published_at=published_at, language_hint=language_hint)

    return run


def place_names(out: dict[str, Any], kind: str | None = None) -> set[str]:
    """Names of the places found, optionally of one kind."""
    return {p["name"] for p in out["places"] if kind is None or p["kind"] == kind}
