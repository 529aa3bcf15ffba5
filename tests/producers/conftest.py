"""Fixtures for producer tests: a recording publisher and a local feed server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feedtools import FeedServer, RecordingPublisher


@pytest.fixture
def recorder() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()
