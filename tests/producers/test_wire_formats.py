"""NewsML-G2, NITF and RSS/Atom documents through the input contract, and hostile XML refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.formats import detect_format, parse_bytes, parse_file
from producers.formats.rss import entry_key, html_to_text, normalize_link, read_feed
from worker.messages import Delivery, Rejection

DATA = Path(__file__).parent / "data"
GUID = "urn:newsml:wire.example:20190212:baghouz-families"


def parse(name: str, fmt: str = "auto") -> list[Delivery | Rejection]:
    return parse_file(DATA / name, format=fmt, source="wire", max_bytes=1 << 20, max_depth=32)


def test_newsml_versions_make_one_delivery_each_with_guid_and_version() -> None:
    (v1,), (v2,) = parse("newsml_v1.xml"), parse("newsml_v2.xml")
    assert isinstance(v1, Delivery) and isinstance(v2, Delivery)
    assert (v1.id, v2.id) == (f"{GUID}:1", f"{GUID}:2")
    assert v1.extra["guid"] == v2.extra["guid"] == GUID
    assert (v1.extra["version"], v2.extra["version"]) == ("1", "2")
    assert v1.extra["pub_status"] == "usable" and v1.extra["withdrawn"] is False
    assert v1.format == "newsml" and v1.language == "ar"
    assert v1.title == "عائلات مقاتلي داعش الأجانب تفر من آخر جيب بشرق سوريا"
    # The Arabic headline is picked among several languages.
    assert v2.title is not None and v2.title.startswith("عائلات") and "قوات سوريا" in v2.title
    assert v1.body.count("\n") == 1 and v2.body.count("\n") == 3
    assert v1.body.startswith("عشرات من عائلات مقاتلين أجانب")
    assert v1.extra["dateline"] == "باغوز (سوريا) 12 فبراير (رويترز)"
    # published_at is the story's first creation; each version keeps its own time.
    assert v1.published_at == v2.published_at == datetime(2019, 2, 12, 9, 10, tzinfo=UTC)
    assert v2.extra["version_created"] == "2019-02-12T11:45:00+00:00"
    assert v2.extra["signals"] == ["sig:update"]


def test_newsml_cancellation_is_a_delivery_that_says_withdrawn() -> None:
    (item,) = parse("newsml_v3_canceled.xml")
    assert isinstance(item, Delivery)
    assert item.id == f"{GUID}:3"
    assert item.extra["pub_status"] == "canceled"
    assert item.extra["withdrawn"] is True and item.extra["guid"] == GUID
    assert item.extra["placeholder_body"] is True and item.body
    assert item.extra["ed_note"] == "سحب الخبر لعدم دقة المعلومات"


def test_newsml_message_items_are_parsed_one_by_one_and_a_bad_one_is_kept() -> None:
    good, bad = parse("newsml_message.xml")
    assert isinstance(good, Delivery) and good.id == "urn:newsml:wire.example:20190212:coalition-air:1"
    assert good.body.split("\n")[1].startswith("وأضاف أنه")
    assert good.extra["provider"] == "WIRE"
    assert isinstance(bad, Rejection) and bad.code == "missing_id"
    assert "خبر بلا معرف".encode() in bad.raw and b"coalition-air" not in bad.raw


def test_nitf_versions_and_withheld() -> None:
    (v1,), (v2,), (held,) = parse("nitf_v1.xml"), parse("nitf_v2.xml"), parse("nitf_withheld.xml")
    assert [d.id for d in (v1, v2, held)] == [f"baghouz-families-20190212:{n}" for n in (1, 2, 3)]  # type: ignore[union-attr]
    assert isinstance(v1, Delivery) and isinstance(v2, Delivery) and isinstance(held, Delivery)
    assert v1.format == "nitf" and v1.language == "ar"
    assert v1.title == "عائلات مقاتلي داعش الأجانب تفر من آخر جيب بشرق سوريا"
    assert v1.extra["dateline"] == "باغوز 12 فبراير"
    assert v1.published_at == datetime(2019, 2, 12, 9, 10, tzinfo=UTC)
    assert v2.extra["version_created"] == "2019-02-12T12:30:00+00:00"
    assert len(v2.body.split("\n")) == 3 and v2.extra["doc_id"] == "WIRE-20190212-0057"
    assert held.extra["pub_status"] == "withheld" and held.extra["withdrawn"] is True
    assert held.body == held.title


@pytest.mark.parametrize("name", ["xxe.xml", "billion_laughs.xml"])
def test_hostile_xml_is_refused_and_kept(name: str) -> None:
    raw = (DATA / name).read_bytes()
    for fmt in ("auto", "newsml", "nitf", "feed"):
        (result,) = parse_bytes(raw, name=name, format=fmt, source="wire", max_bytes=1 << 20, max_depth=32)
        assert isinstance(result, Rejection), fmt
        assert result.code == "unsafe_xml" and result.raw == raw
        assert b"root:" not in result.raw_b64.encode()


def test_format_detection() -> None:
    assert detect_format("a.xml", (DATA / "nitf_v1.xml").read_bytes()) == "nitf"
    assert detect_format("a.xml", (DATA / "newsml_message.xml").read_bytes()) == "newsml"
    rss = b"\xef\xbb\xbf<?xml version='1.0'?><!-- x --><rss version='2.0'/>"
    assert detect_format("a.xml", rss) == "feed"
    assert detect_format("a.xml", b"<x:feed xmlns:x='http://www.w3.org/2005/Atom'/>") == "feed"
    assert detect_format("000_x.txt", b"") == "seed"
    assert detect_format("b.jsonl", b"") == "jsonl"
    assert detect_format("a.xml", b"<html/>") is None
    assert detect_format("a.pdf", b"%PDF") is None


def test_unknown_and_malformed_files_become_rejections() -> None:
    (unknown,) = parse_bytes(
        b"%PDF-1.4", name="x.pdf", format="auto", source="s", max_bytes=1024, max_depth=8
    )
    assert isinstance(unknown, Rejection) and unknown.code == "unknown_format" and unknown.raw == b"%PDF-1.4"
    (broken,) = parse_bytes(
        b"<nitf><head>", name="x.xml", format="auto", source="s", max_bytes=1024, max_depth=8
    )
    assert isinstance(broken, Rejection) and broken.code == "invalid_xml"
    (big,) = parse_bytes(
        b"<nitf>" + b"x" * 3000 + b"</nitf>",
        name="x.xml",
        format="nitf",
        source="s",
        max_bytes=1024,
        max_depth=8,
    )
    assert isinstance(big, Rejection) and big.code == "too_large" and len(big.raw) == 1024


def test_html_to_text_strips_markup_scripts_and_keeps_paragraphs() -> None:
    html = (
        "<div><p>الفقرة <b>الأولى</b> &amp; المزيد</p><script>alert('x')</script>"
        "<style>p{}</style><p>الثانية<br/>سطر</p><!-- note --><img src=x onerror=alert(1)></div>"
    )
    assert html_to_text(html) == "الفقرة الأولى & المزيد\nالثانية\nسطر"


def test_entry_keys_ignore_tracking_and_case_but_not_the_title() -> None:
    assert (
        normalize_link("HTTP://News.Example:80/a/b/?utm_source=rss&id=2#top")
        == "https://news.example/a/b?id=2"
    )
    a = entry_key("http://news.example/a?utm_medium=x", "عنوانُ الخبر")
    assert a == entry_key("https://NEWS.example/a/", "عنوان الخبر")  # harakat folded by the match form
    assert a != entry_key("https://news.example/a", "عنوان آخر")
    assert a.startswith("k:") and len(a) == 34


RSS_NO_GUID = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>t</title><language>ar</language>
<item><title>خبر &lt;b&gt;أول&lt;/b&gt;</title><link>https://news.example/1?utm_source=rss</link>
<description>&lt;p&gt;نص &lt;i&gt;الخبر&lt;/i&gt;&lt;/p&gt;&lt;p&gt;فقرة ثانية&lt;/p&gt;</description>
<pubDate>Tue, 12 Feb 2019 09:10:00 +0100</pubDate><category>سياسة</category></item>
<item><title>بلا نص</title><link>https://news.example/2</link></item>
</channel></rss>"""


def test_rss_without_guid_gets_derived_ids_and_text_bodies() -> None:
    doc = read_feed(RSS_NO_GUID.encode(), source="feed-x", feed_url="https://news.example/rss")
    first, second = doc.entries
    assert doc.format == "rss" and doc.language == "ar"
    assert isinstance(first, Delivery)
    assert first.id == entry_key("https://news.example/1", "خبر أول")
    assert first.title == "خبر أول" and first.body == "نص الخبر\nفقرة ثانية"
    assert first.published_at == datetime(2019, 2, 12, 8, 10, tzinfo=UTC)
    assert first.language == "ar" and first.format == "rss" and first.extra["tags"] == ["سياسة"]
    assert isinstance(second, Rejection) and second.code == "empty_body"
