"""The bounded token memo: same values as computing them, memory bounded by two generations."""

from __future__ import annotations

import pytest

from worker.memo import TokenMemo


def test_values_are_computed_once_while_in_use_and_memory_stays_bounded() -> None:
    calls: list[str] = []

    def compute(token: str) -> int:
        calls.append(token)
        return len(token)

    memo = TokenMemo(compute, generation=3)
    assert memo.many(["a", "bb", "a", "ccc"]) == [1, 2, 1, 3]
    assert calls == ["a", "bb", "ccc"]
    assert memo.many(["dddd"]) == [4]  # the young generation was full: it is the old one now
    # "a" is in use: a lookup from the old generation moves it to the young one, so it survives
    # the next turnover, which drops the tokens nobody asked for since ("bb", "ccc").
    assert memo.many(["a", "e", "f", "g", "a"]) == [1, 1, 1, 1, 1]
    assert calls == ["a", "bb", "ccc", "dddd", "e", "f", "g"]
    assert memo.one("ccc") == 3 and calls[-1] == "ccc"
    for i in range(1000):
        memo.one(str(i))
        assert len(memo) <= 2 * 3
    assert memo.one("bb") == 2 and calls[-1] == "bb"  # long dropped: computed again


def test_falsy_values_are_memoized_too() -> None:
    calls: list[str] = []
    memo: TokenMemo[str] = TokenMemo(lambda t: calls.append(t) or "", generation=10)
    assert memo.many(["x", "x", "y"]) == ["", "", ""]
    assert memo.many(("x", "y")) == ["", ""]
    assert calls == ["x", "y"]


def test_a_generation_holds_at_least_one_token() -> None:
    with pytest.raises(ValueError):
        TokenMemo(len, generation=0)
