"""A bounded per-process memo of what a token maps to (its keyword term, its flagged hash).

News vocabulary repeats, so the stages compute a token's value once per process and look it up
afterwards. The vocabulary also keeps growing (names, numbers, typos: 213,000 distinct match-form
tokens in the corpus), so the memo must be bounded, and emptying it when full would make every
token a miss again at once. It keeps two generations instead: values are added to the young one,
a lookup that finds a token only in the old one moves it to the young one, and when the young one
holds ``generation`` tokens it becomes the old one (the previous old one is dropped). Tokens in
use survive every turnover; memory stays under two generations, whatever the run's length.

Written here because the lookups are the hot path: a batch of tokens is looked up with one
``map(dict.get, ...)`` (in C), and only the misses run Python code. functools.lru_cache keeps
recency per call (a Python-level call per token) and cachetools' caches are Python classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress, count, repeat
from operator import is_
from typing import Generic, TypeVar

V = TypeVar("V")


class TokenMemo(Generic[V]):
    """``compute(token)`` for many tokens, memoized in at most two generations of ``generation``
    tokens each. ``compute`` must never return None."""

    __slots__ = ("compute", "generation", "old", "young")

    def __init__(self, compute: Callable[[str], V], generation: int) -> None:
        if generation < 1:
            raise ValueError("generation must hold at least one token")
        self.compute = compute
        self.generation = generation
        self.young: dict[str, V] = {}
        self.old: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def many(self, tokens: Iterable[str]) -> list[V]:
        """The value of each token, in order."""
        tokens = tokens if isinstance(tokens, list | tuple) else list(tokens)
        young = self.young
        values: list[V | None] = list(map(young.get, tokens))
        if None not in values:
            return values  # type: ignore[return-value]
        # Nearly every story has a few dozen misses among its hundreds of tokens: find them in C,
        # then look them up in the old generation and add them to the young one with one call
        # each, not one Python call per token; only the tokens in neither run Python code.
        at = list(compress(count(), map(is_, values, repeat(None))))
        missing = list(dict.fromkeys(map(tokens.__getitem__, at)))
        if len(young) + len(missing) > self.generation:
            # The young generation fills up among these: token by token, as :meth:`one` turns over.
            one = self.one
            for i in at:
                values[i] = one(tokens[i])
            return values  # type: ignore[return-value]
        found: list[V | None] = list(map(self.old.get, missing))
        if None in found:
            compute = self.compute
            for j in compress(count(), map(is_, found, repeat(None))):
                found[j] = compute(missing[j])
        young.update(zip(missing, found, strict=True))  # type: ignore[arg-type]
        get = young.__getitem__
        for i in at:
            values[i] = get(tokens[i])
        return values  # type: ignore[return-value]

    def one(self, token: str) -> V:
        """The value of one token."""
        value = self.young.get(token)
        if value is not None:
            return value
        value = self.old.get(token)
        if value is None:
            value = self.compute(token)
        if len(self.young) >= self.generation:
            self.old, self.young = self.young, {}
        self.young[token] = value
        return value
