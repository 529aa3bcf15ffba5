"""Fixtures for producer tests: a publisher that records what it was given."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest

from worker.messages import Delivery, Rejection, new_delivery_id


class RecordingPublisher:
    """Records what sources publish, for producer-side behaviour only (what got published, file
    moves); the real :class:`producers.publish.Publisher` is tested against Redis separately.

    ``fail_next`` makes the next N publish calls raise, as a broker outage would; ``depth`` is what
    :meth:`queue_depth` reports.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[Delivery | Rejection], bool]] = []
        self.fail_next = 0
        self.depth = 0
        self.lock = threading.Lock()

    def publish(
        self, items: Iterable[Delivery | Rejection], *, live: bool = False, run_id: str | None = None
    ) -> list[str]:
        batch = list(items)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise ConnectionError("broker unavailable")
            self.calls.append((batch, live))
        return [new_delivery_id() for _ in batch]

    def queue_depth(self) -> int:
        return self.depth

    @property
    def items(self) -> list[Delivery | Rejection]:
        return [item for batch, _ in self.calls for item in batch]

    @property
    def deliveries(self) -> list[Delivery]:
        return [i for i in self.items if isinstance(i, Delivery)]

    @property
    def rejections(self) -> list[Rejection]:
        return [i for i in self.items if isinstance(i, Rejection)]


@pytest.fixture
def recorder() -> RecordingPublisher:
    return RecordingPublisher()
