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


@pytest.mark.parametrize("generation", [1, 5, 50])
def test_a_lookup_of_many_tokens_computes_and_keeps_what_miss_by_miss_lookups_would(generation: int) -> None:
    """``many`` moves and computes a call's misses together (turning over token by token only when
    the young generation fills up among them): the values, the tokens computed (in order) and the
    generations' contents stay those of a ``one`` call per miss of the young generation."""
    import random

    rnd = random.Random(generation)
    vocabulary = [f"w{i}" for i in range(200)]
    calls: dict[str, list[str]] = {"many": [], "one": []}
    bulk = TokenMemo(lambda t: calls["many"].append(t) or t.upper(), generation)
    single = TokenMemo(lambda t: calls["one"].append(t) or t.upper(), generation)
    for _ in range(300):
        # Zipf-like: a few tokens recur in most calls, the rest rarely
        tokens = [vocabulary[min(int(rnd.paretovariate(0.8)), 199)] for _ in range(rnd.randrange(0, 30))]
        assert bulk.many(tokens) == _miss_by_miss(single, tokens) == [t.upper() for t in tokens]
        assert calls["many"] == calls["one"]
        assert (bulk.young, bulk.old) == (single.young, single.old)
    assert len(calls["many"]) > 200  # the stream did turn the generations over


def _miss_by_miss(memo: TokenMemo[str], tokens: list[str]) -> list[str]:
    """The young generation's values, then a ``one`` call for each token it did not hold."""
    values = [memo.young.get(t) for t in tokens]
    return [memo.one(t) if v is None else v for t, v in zip(tokens, values, strict=True)]
