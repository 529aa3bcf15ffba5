"""Match-form cost per story: CAMeL Tools' chain (the reference) against ``match_form_fast``.

Run: ``uv run python -m bench.normalize [--articles 2000] [--rounds 5]``

Each story is what the normalize stage feeds to the match form: its title and every paragraph.
Both functions run on the same stories in the same process, interleaved story by story so that
load from other processes hits both alike; each story's cost is the best of ``--rounds`` runs, and
the figures are medians over stories. The outputs are compared too: the benchmark refuses to
report a speed-up for a function that does not compute the same thing.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import orjson

from producers.records import split_paragraphs
from worker.stages.normalize import match_form_reference
from worker.stages.normalize_fast import match_form_fast

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "articles.jsonl.gz"
SIX_KB = 6 * 1024


def load_stories(path: Path, count: int) -> list[list[str]]:
    """``count`` articles spread evenly over the corpus, each as its title and paragraphs."""
    with gzip.open(path, "rb") as fh:
        articles = [orjson.loads(line) for line in fh]
    step = max(1, len(articles) // count)
    return [[a.get("title") or "", *split_paragraphs(a.get("body") or "")] for a in articles[::step][:count]]


def best_of(fn: Callable[[str], str], texts: list[str], rounds: int) -> float:
    """The fastest of ``rounds`` runs of ``fn`` over one story's texts, in seconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """Print the per-story median cost of both functions and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    if not args.corpus.exists():
        print(f"corpus not found: {args.corpus} (see ../shared/corpus/SOURCES.md)", file=sys.stderr)
        return 2

    stories = load_stories(args.corpus, args.articles)
    differ = sum(match_form_fast(t) != match_form_reference(t) for s in stories for t in s)
    if differ:
        print(f"match_form_fast differs from the reference on {differ} texts", file=sys.stderr)
        return 1

    sizes = [sum(len(t.encode("utf-8")) for t in s) for s in stories]
    ref_s: list[float] = []
    fast_s: list[float] = []
    for texts in stories:
        ref_s.append(best_of(match_form_reference, texts, args.rounds))
        fast_s.append(best_of(match_form_fast, texts, args.rounds))

    def per_6kb(times: list[float]) -> float:
        return statistics.median(t / n * SIX_KB for t, n in zip(times, sizes, strict=True) if n)

    ref_med, fast_med = statistics.median(ref_s), statistics.median(fast_s)
    print(f"python {platform.python_version()}, camel-tools {version('camel-tools')}")
    print(
        f"{len(stories)} stories, {sum(len(s) for s in stories)} texts (titles and paragraphs), "
        f"median story {statistics.median(sizes) / 1024:.1f} KB UTF-8, best of {args.rounds} runs each"
    )
    print(f"{'':28}{'median/story':>14}{'per 6 KB':>12}{'total':>10}")
    for name, times, med in (
        ("CAMeL Tools chain (ref)", ref_s, ref_med),
        ("match_form_fast", fast_s, fast_med),
    ):
        print(f"{name:28}{med * 1e3:>11.3f} ms{per_6kb(times) * 1e3:>9.3f} ms{sum(times):>8.2f} s")
    print(f"{'ratio (ref / fast)':28}{ref_med / fast_med:>13.1f}x{per_6kb(ref_s) / per_6kb(fast_s):>11.1f}x")
    print(f"outputs identical on all {sum(len(s) for s in stories)} texts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
