"""Records whose field names differ from the input contract: ``akhbar replay --map FIELD=KEY[:REGEX]``.

An export from another system rarely names its fields as akhbar's contract does (``date`` for
``published_at``, the outlet hidden in a path-like id). A rule takes a contract field's value from
another key of the same record, optionally through a regular expression: its first group (or the
whole match when it has no group). For the development corpus, whose outlet is the third part of a
SaudiNewsNet id and whose time is ``date``::

    akhbar replay articles.jsonl.gz --map published_at=date \\
        --map 'source=id:^saudinewsnet/[^/]+/([^/]+)/'

Rules read the record as it arrived (one rule never sees another's result), and a rule whose key
is missing, empty, or does not match leaves the field as the record had it. The mapped record goes
through the contract's validation again, so a mapped value that is not valid (a ``date`` that is
not ISO 8601) rejects the delivery with the usual reason, and the record (as parsed) is kept with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from producers.records import CONTRACT_FIELDS, build_delivery
from worker.messages import Delivery, Rejection

# The fields a rule may set: the contract's fields.
MAPPABLE = CONTRACT_FIELDS


@dataclass(frozen=True)
class FieldRule:
    """``field`` takes the value of the record's ``key`` (through ``pattern``, if given)."""

    field: str
    key: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, spec: str) -> FieldRule:
        """``FIELD=KEY`` or ``FIELD=KEY:REGEX``; ValueError says what is wrong."""
        target, sep, rest = spec.partition("=")
        target, rest = target.strip(), rest.strip()
        if not sep or not target or not rest:
            raise ValueError(f"{spec!r}: a mapping is FIELD=KEY or FIELD=KEY:REGEX")
        if target not in MAPPABLE:
            raise ValueError(f"{spec!r}: {target!r} is not a field of the input contract "
                             f"({', '.join(MAPPABLE)})")
        key, colon, regex = rest.partition(":")
        if not key:
            raise ValueError(f"{spec!r}: the key to read is missing")
        if not colon:
            return cls(field=target, key=key)
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"{spec!r}: the regular expression does not compile: {exc}") from exc
        return cls(field=target, key=key, pattern=pattern)

    def value(self, record: dict[str, Any]) -> Any:
        """The value this rule gives, or None when it gives none."""
        value = record.get(self.key)
        if value is None or value == "":
            return None
        if self.pattern is None:
            return value
        match = self.pattern.search(value if isinstance(value, str) else str(value))
        if match is None:
            return None
        return match.group(1) if self.pattern.groups else match.group(0)


class FieldMap:
    """An ordered set of :class:`FieldRule` applied to each parsed delivery."""

    def __init__(self, rules: Iterable[FieldRule]) -> None:
        self.rules = list(rules)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> FieldMap:
        return cls(FieldRule.parse(spec) for spec in specs)

    def apply(self, item: Delivery | Rejection) -> Delivery | Rejection:
        """The delivery with its fields mapped and validated again; a rejection as it is."""
        if not self.rules or not isinstance(item, Delivery):
            return item
        record: dict[str, Any] = dict(item.extra)
        record.update({
            "id": item.id, "body": item.body, "source": item.source, "title": item.title, "url": item.url,
            "published_at": item.published_at.isoformat() if item.published_at else None,
            "language": item.language,
        })
        mapped = dict(record)
        changed = False
        for rule in self.rules:
            value = rule.value(record)
            if value is not None:
                mapped[rule.field] = value
                changed = True
        if not changed:
            return item
        return build_delivery(mapped, default_source=item.source, raw=orjson.dumps(record, default=str),
                              format=item.format)

    def __call__(self, items: Iterable[Delivery | Rejection]) -> Iterator[Delivery | Rejection]:
        for item in items:
            yield self.apply(item)
