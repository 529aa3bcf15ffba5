"""A process keeps one near-duplicate index per deployment, never one deployment's for another's."""

from __future__ import annotations

from pydantic import SecretStr

from akhbar.settings import Settings
from worker.neardup import NearDupIndex
from worker.neardup.local import LocalNearDupIndex
from worker.tasks import _neardup_index


def test_each_redis_prefix_gets_its_own_index(redis_url: str, redis_prefix: str, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    a = Settings(database_url=db, redis_url=SecretStr(redis_url), redis_prefix=f"{redis_prefix}-a")
    b = Settings(database_url=db, redis_url=SecretStr(redis_url), redis_prefix=f"{redis_prefix}-b")
    first, second = _neardup_index(a), _neardup_index(b)
    assert isinstance(first, NearDupIndex) and isinstance(second, NearDupIndex)
    assert first.prefix.startswith(f"{redis_prefix}-a:") and second.prefix.startswith(f"{redis_prefix}-b:")
    assert _neardup_index(a) is first  # built once per process and deployment


def test_each_embedded_database_gets_its_own_index(tmp_path) -> None:
    one = Settings(database_url=f"sqlite:///{tmp_path / 'one.db'}", redis_url=None)
    two = Settings(database_url=f"sqlite:///{tmp_path / 'two.db'}", redis_url=None)
    first, second = _neardup_index(one), _neardup_index(two)
    assert isinstance(first, LocalNearDupIndex) and isinstance(second, LocalNearDupIndex)
    assert first is not second
    assert _neardup_index(one) is first
