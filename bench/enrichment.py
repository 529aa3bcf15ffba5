"""Enrichment quality on the hand-annotated gold set, and its cost per story.

    uv run python -m bench.enrichment [--cost-sample N] [--errors]

Prints precision and recall per field (places, countries, cities, agencies, dateline) over the
gold set ``tests/data/enrichment_gold.jsonl`` (100 corpus articles: 60 drawn at random across
outlets, 40 from articles that name a wire agency, see ``tests/data/README.md``), per stratum and
overall, then the median and 95th-percentile cost of one ``enrich`` call over a corpus sample,
with ``normalize`` measured in the same run as a baseline.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.enrichment import enrich, warm
from worker.stages.normalize import match_form, normalize

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "tests" / "data" / "enrichment_gold.jsonl"
CORPUS = ROOT.parent / "shared" / "corpus" / "articles.jsonl.gz"


@dataclass
class Score:
    """True positives, false positives and false negatives of one field."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, gold: set[Any], predicted: set[Any], where: str) -> None:
        self.tp += len(gold & predicted)
        self.fp += len(predicted - gold)
        self.fn += len(gold - predicted)
        for item in sorted(map(str, predicted - gold)):
            self.errors.append(f"FP {where}: {item}")
        for item in sorted(map(str, gold - predicted)):
            self.errors.append(f"FN {where}: {item}")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_gold(path: Path = GOLD) -> list[dict[str, Any]]:
    """The gold records, one per annotated article."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_articles(ids: Iterable[str], corpus: Path = CORPUS) -> dict[str, dict[str, Any]]:
    """The corpus articles with the given ids (the gold set stores ids, not text)."""
    wanted = set(ids)
    found: dict[str, dict[str, Any]] = {}
    with gzip.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["id"] in wanted:
                found[row["id"]] = row
                if len(found) == len(wanted):
                    break
    return found


def enrich_article(article: dict[str, Any]) -> dict[str, Any]:
    """Normalize then enrich one corpus article, as the pipeline does."""
    normalized = normalize(title=article.get("title"), body=article["body"])
    return enrich(title=article.get("title"), body=article["body"], paragraphs=normalized.paragraphs,
                  match_title=normalized.match_title, match_body=normalized.match_body)


def _dateline_key(dateline: dict[str, Any] | None) -> set[tuple[str, str]]:
    """A dateline is right when its place as written and its agency are: resolving the place to
    a canonical name is the places field's job, measured there."""
    if not dateline:
        return set()
    return {(match_form(dateline.get("place_ar") or ""), str(dateline.get("agency")))}


def evaluate(gold: list[dict[str, Any]], articles: dict[str, dict[str, Any]],
             strata: Iterable[str] | None = None) -> dict[str, Score]:
    """Precision/recall per field, over (article, item) pairs."""
    keep = set(strata) if strata is not None else None
    scores = {name: Score() for name in ("places", "countries", "cities", "agencies", "dateline")}
    for record in gold:
        if keep is not None and record["stratum"] not in keep:
            continue
        out = enrich_article(articles[record["id"]])
        where = record["id"]
        gold_places = {(p["kind"], p["name"], p["country_code"]) for p in record["places"]}
        pred_places = {(p["kind"], p["name"], p["country_code"]) for p in out["places"]}
        scores["places"].add(gold_places, pred_places, where)
        for kind, name in (("country", "countries"), ("city", "cities")):
            scores[name].add({p for p in gold_places if p[0] == kind},
                             {p for p in pred_places if p[0] == kind}, where)
        scores["agencies"].add(set(record["agencies"]), {a["name"] for a in out["agencies"]}, where)
        scores["dateline"].add(_dateline_key(record["dateline"]), _dateline_key(out["dateline"]), where)
    return scores


def cost(sample: int) -> tuple[list[float], list[float]]:
    """Per-story seconds of enrich and of normalize over ``sample`` articles spread over the corpus."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    # The file is ordered by outlet: take every k-th article so every outlet is in the sample.
    step = max(1, len(lines) // sample)
    rows = [json.loads(line) for line in lines[::step][:sample]]
    prepared = [(r, normalize(title=r.get("title"), body=r["body"])) for r in rows]
    enrich_times: list[float] = []
    normalize_times: list[float] = []
    for row, normalized in prepared:
        t0 = time.perf_counter()
        normalize(title=row.get("title"), body=row["body"])
        t1 = time.perf_counter()
        enrich(title=row.get("title"), body=row["body"], paragraphs=normalized.paragraphs,
               match_title=normalized.match_title, match_body=normalized.match_body)
        t2 = time.perf_counter()
        normalize_times.append(t1 - t0)
        enrich_times.append(t2 - t1)
    return enrich_times, normalize_times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost-sample", type=int, default=2000, help="articles timed for the cost figure")
    parser.add_argument("--errors", action="store_true", help="list every false positive and negative")
    args = parser.parse_args()

    t0 = time.perf_counter()
    warm()
    print(f"gazetteer and language model loaded in {time.perf_counter() - t0:.2f} s")
    gold = load_gold()
    articles = load_articles(r["id"] for r in gold)
    print(f"gold set: {len(gold)} articles ({GOLD.relative_to(ROOT)})")
    print(f"{'field':<10} {'subset':<8} {'P':>6} {'R':>6} {'tp':>5} {'fp':>4} {'fn':>4}")
    for label, strata in (("all", None), ("random", ["random"]), ("wire", ["wire"])):
        scores = evaluate(gold, articles, strata)
        for name, s in scores.items():
            print(f"{name:<10} {label:<8} {s.precision:6.3f} {s.recall:6.3f} {s.tp:5d} {s.fp:4d} {s.fn:4d}")
        if args.errors and label == "all":
            for name, s in scores.items():
                for err in s.errors:
                    print(f"  {name}: {err}")

    enrich_times, normalize_times = cost(args.cost_sample)
    med_e = statistics.median(enrich_times) * 1000
    med_n = statistics.median(normalize_times) * 1000
    print(f"cost over {len(enrich_times)} corpus articles: enrich median {med_e:.3f} ms, "
          f"p95 {_pct(enrich_times, 0.95) * 1000:.3f} ms; normalize (baseline, same run) median "
          f"{med_n:.3f} ms; ratio enrich/normalize {med_e / med_n:.2f}")


if __name__ == "__main__":
    main()
