"""The worker's input guards remove invisible controls without changing what the story says: the
sanitized text has the content hash of the text as sent, paragraphs included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.guards import safe_text
from worker.stages.normalize import normalize

INVISIBLE = "\u202a\u202b\u202c\u202d\u202e\u200b\u2060\ufeff\u2066\u2067\u2068\u2069"


def test_a_control_beside_a_line_break_keeps_the_paragraphs() -> None:
    # As in two corpus articles: a pop-directional-formatting mark between a space and a line break.
    body = "شاهد الفيلم (رويترز). \u202c\n«لعبة الجوع» في دور العرض\n\n\u202b* تمثيل"
    cleaned = safe_text(body)
    assert cleaned.split("\n") == ["شاهد الفيلم (رويترز).", "«لعبة الجوع» في دور العرض", "", "* تمثيل"]
    assert normalize(title="t", body=cleaned).content_hash == normalize(title="t", body=body).content_hash


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["كلمة", "و", " ", "\n", "\r\n", ".", "12", *INVISIBLE]), max_size=30))
def test_sanitized_text_keeps_the_content_hash(parts: list[str]) -> None:
    body = "خبر " + "".join(parts) + " نهاية"
    cleaned = safe_text(body)
    assert not set(cleaned) & set(INVISIBLE)
    assert normalize(title="t", body=cleaned).content_hash == normalize(title="t", body=body).content_hash


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["كلمة", " ", "\n", "<b>", "a < b", "\u200c", "\u200f", *INVISIBLE]),
                max_size=20))
def test_safe_text_equals_its_two_substitutions(parts: list[str]) -> None:
    from worker import guards

    text = "".join(parts)
    expected = text
    if guards._MARKUP.search(expected):
        from producers.formats.rss import html_to_text

        expected = html_to_text(expected)
    expected = guards._INVISIBLE.sub(guards._invisible_run, guards._ISOLATES.sub("", expected))
    assert safe_text(text) == expected
