"""Settings whose default depends on the mode."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from akhbar.settings import EMBEDDED_BATCH_SIZE, Settings


def test_embedded_mode_batches_more_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AKHBAR_BATCH_SIZE", raising=False)
    monkeypatch.delenv("AKHBAR_REDIS_URL", raising=False)
    assert Settings().batch_size == EMBEDDED_BATCH_SIZE
    assert Settings(redis_url=SecretStr("redis://127.0.0.1:6379/0")).batch_size == 100
    assert Settings(batch_size=50).batch_size == 50
    monkeypatch.setenv("AKHBAR_BATCH_SIZE", "20")
    assert Settings().batch_size == 20
