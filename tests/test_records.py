"""The input contract: seed files, JSON records and every kind of rejection."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from producers.records import parse_json_record, parse_seed, split_paragraphs, split_seed_body
from worker.messages import Delivery, Rejection

SEED = Path(__file__).resolve().parent.parent / "seeds" / "000_7b75cc1a696a820f.txt"
LIMITS = {"default_source": "wire", "max_bytes": 64 * 1024, "max_depth": 32}


def test_seed_story_parses_into_headline_and_paragraphs() -> None:
    delivery = parse_seed(SEED.read_bytes(), stem=SEED.stem, max_bytes=1 << 20)
    assert isinstance(delivery, Delivery)
    assert delivery.id == "000_7b75cc1a696a820f"
    assert delivery.source == "seeds"
    assert delivery.title == "عائلات مقاتلي داعش الأجانب تفر من آخر جيب بشرق سوريا"
    paragraphs = split_paragraphs(delivery.body, "seed")
    assert len(paragraphs) == 21
    assert paragraphs[0].startswith("عشرات من عائلات")
    assert paragraphs[-1].endswith("التمرد مجددا.")
    # every paragraph keeps its final dot and none starts with the join's comma
    assert all(p.endswith((".", '".')) for p in paragraphs[:-1])
    assert not any(p.startswith(",") for p in paragraphs)
    # the body is kept exactly as sent
    assert delivery.body in SEED.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("أولا., ثانيا.", ["أولا.", "ثانيا."]),
        # abbreviations and numbers are not paragraph joins
        ("قالت الولايات المتحدة U.S., and more., ثم.", ["قالت الولايات المتحدة U.S., and more.", "ثم."]),
        ("نقلت أ.ف.ب., وقالت.", ["نقلت أ.ف.ب., وقالت."]),
        ("البنود 3., 4 و5 تبقى.", ["البنود 3., 4 و5 تبقى."]),
        ("بلا فواصل.", ["بلا فواصل."]),
        ("قال: \"انتهى\"., وأضاف.", ["قال: \"انتهى\".", "وأضاف."]),
    ],
)
def test_seed_split_only_breaks_at_paragraph_joins(body: str, expected: list[str]) -> None:
    assert split_seed_body(body) == expected


def test_seed_without_blank_line_is_rejected_with_raw_bytes() -> None:
    raw = "عنوان\nنص بلا سطر فارغ".encode()
    result = parse_seed(raw, stem="bad", max_bytes=1 << 20)
    assert isinstance(result, Rejection)
    assert result.code == "invalid_seed"
    assert result.raw == raw
    assert result.source_id == "bad"


def test_json_record_keeps_unknown_fields() -> None:
    raw = orjson.dumps({"id": 7, "body": "نص", "title": "ع", "published_at": "2019-02-12T10:00:00Z",
                        "category": "سياسة", "tags": ["a"]})
    result = parse_json_record(raw, **LIMITS)
    assert isinstance(result, Delivery)
    assert result.id == "7"
    assert result.source == "wire"
    assert result.published_at is not None and result.published_at.tzinfo is not None
    assert result.extra == {"category": "سياسة", "tags": ["a"]}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (orjson.dumps({"body": "x"}), "missing_id"),
        (orjson.dumps({"id": "1"}), "missing_body"),
        (orjson.dumps({"id": "1", "body": "   "}), "empty_body"),
        (orjson.dumps({"id": "1", "body": 3}), "invalid_field"),
        (orjson.dumps({"id": True, "body": "x"}), "invalid_field"),
        (orjson.dumps({"id": "1", "body": "x", "published_at": "yesterday"}), "invalid_field"),
        (orjson.dumps({"id": "a\u202eb", "body": "x"}), "invalid_field"),
        (b'{"id": "1", "body": "\xff\xfe"}', "invalid_utf8"),
        (b'{"id": "1", "body": "a\x00b"}', "nul_bytes"),
        (b'{"id": "1", "body": "\\ud800"}', "lone_surrogate"),
        (b'{"id": "1", "body": "x", "n": ' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (orjson.dumps({"id": "1", "body": "x" * 70_000}), "too_large"),
    ],
)
def test_bad_records_are_rejected_with_reason_and_raw(raw: bytes, code: str) -> None:
    result = parse_json_record(raw, **LIMITS)
    assert isinstance(result, Rejection), result
    assert result.code == code
    assert result.message
    kept = base64.b64decode(result.raw_b64)
    assert kept == raw[: LIMITS["max_bytes"]]
