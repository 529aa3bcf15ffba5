"""Near-duplicate benchmark: accuracy, throughput against datasketch's MinHashLSH on Redis, memory.

    uv run python -m bench.neardup [--quick] [--no-fresh] [--accuracy-only] [--unlabelled FILE]
                                   [--redis redis://127.0.0.1:6379/0]

Data: :mod:`bench.corpus_variants` builds labelled deliveries at run time from the corpus: all
articles of the tuning days (2015-07-22/23/24, where the model and thresholds were fitted), of the
held-out days (2015-07-26/27 and 08-03; their errors were read while tuning, so they are held out
from fitting but no longer unseen), of the second held-out days (2015-07-25, 08-01 and 08-04, added
later; their false pairs were read for two rules of :mod:`worker.neardup.compare`, the tiny body and
the far-apart anchors) and of the third held-out day (2015-08-02, the last dated corpus day, kept
apart until those rules were committed; ``--no-fresh`` leaves the last two splits out), with
generated variants of every class and the natural
cross-outlet reprints, labelled by an offline rule and, where the rule cannot decide, by hand
(``bench/natural_pairs_checked.tsv``). Each split runs through a fresh index in arrival order, as
the persist stage would: an exact match on the content hash is a ``duplicate``; otherwise the
index's atomic lookup-and-add returns candidates, :func:`worker.neardup.compare` judges each, the
best match gives the label and every match joins the story (groups are connected components).

Reported per split: pairwise precision, recall and F1 of "same story" over all pairs of deliveries
(a pair joined through a chain counts like any other: two different stories in one group are a
false positive), and the accuracy of the four labels. On the tuning days the same-story model is
fitted again and its cut cross-validated (leave one tuning day out). Then, on the held-out days,
datasketch's MinHashLSH (128 permutations, the same word 3-grams, its threshold chosen on the tuning
days, Redis storage) and akhbar (one delivery per lookup-and-add, and micro-batches of 50 as the
ingest task sends them) see the same deliveries interleaved 250 at a time, so that other load on
the machine falls on all alike: F1 and the dedup-stage throughput ratio (timed from match form to
decision, normalization excluded); datasketch also runs on the second and third held-out splits (in
memory, F1 only). Finally 100,000 stories are indexed (written by a word-bigram
model of the other corpus days, one window) to report the median dedup cost per story at that size
and Redis bytes per indexed story (MEMORY USAGE summed over the index's keys). Every key is written
under a private prefix, deleted at the end. ``--accuracy-only`` stops after the per-split scores.

``--unlabelled FILE`` writes the natural pairs the rule left ambiguous, unread, that some system
joined on the held-out splits (article ids, one pair a line in the format of
``bench/natural_pairs_checked.tsv`` with the label left empty), for a reader to label.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import redis

from bench import corpus_variants as cv
from worker.neardup import DEFAULT_THRESHOLDS, Thresholds, compare, features, signature
from worker.neardup.compare import TERMS, terms
from worker.neardup.index import NearDupIndex
from worker.stages.normalize import normalize

BATCH = 50  # the ingest micro-batch (akhbar.settings: batch_size)


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


@dataclass
class Prepared:
    """A labelled delivery with its match forms, computed before any timing."""

    item: cv.LabelledDelivery
    match_title: str
    match_body: str
    paragraphs: list[str]
    content_hash: str


def prepare(items: Sequence[cv.LabelledDelivery]) -> list[Prepared]:
    out = []
    for d in items:
        n = normalize(title=d.title, body=d.body)
        out.append(Prepared(d, n.match_title, n.match_body, n.match_body.split("\n"), n.content_hash))
    return out


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class RunResult:
    labels: dict[str, str]  # delivery id -> predicted label
    clusters: UnionFind
    seconds: float  # dedup-stage time, all deliveries
    per_story: list[float]


class OursRunner:
    """The dedup stage as the persist stage runs it: exact match, then the index, per micro-batch.

    ``batch`` deliveries share one atomic lookup-and-add (the size of an ingest micro-batch); each
    story is charged its batch's time divided by the batch size.
    """

    def __init__(
        self, index: NearDupIndex, thresholds: Thresholds = DEFAULT_THRESHOLDS, batch: int = 1
    ) -> None:
        index.ensure()
        self.index, self.thresholds, self.batch = index, thresholds, batch
        self.seen_hash: dict[str, str] = {}
        self.result = RunResult({}, UnionFind(), 0.0, [])

    def process(self, prepared: Sequence[Prepared]) -> None:
        res = self.result
        for start in range(0, len(prepared), self.batch):
            chunk = prepared[start : start + self.batch]
            t0 = time.perf_counter()
            pending: list[tuple[str, Any]] = []
            for p in chunk:
                d = p.item
                res.clusters.find(d.delivery_id)
                holder = self.seen_hash.get(p.content_hash)
                if holder is not None:
                    res.labels[d.delivery_id] = "duplicate"
                    res.clusters.union(holder, d.delivery_id)
                    continue
                self.seen_hash[p.content_hash] = d.delivery_id
                sig = signature(
                    match_title=p.match_title,
                    match_body=p.match_body,
                    paragraphs_match=p.paragraphs,
                    published_at=d.published_at,
                    source=d.source,
                )
                pending.append((d.delivery_id, sig))
            if self.batch > 1:
                results = self.index.lookup_and_add_many(pending)
            else:
                results = [self.index.lookup_and_add(ref, sig) for ref, sig in pending]
            for (ref, sig), found in zip(pending, results, strict=True):
                best = None
                for cand in found.candidates:
                    verdict = compare(cand.signature, sig, self.thresholds)
                    if verdict.same_story:
                        res.clusters.union(cand.ref, ref)
                        if best is None or verdict.score > best.score:
                            best = verdict
                res.labels[ref] = "new" if best is None else best.label
            dt = time.perf_counter() - t0
            res.per_story.extend([dt / len(chunk)] * len(chunk))
            res.seconds += dt


def run_ours(
    prepared: Sequence[Prepared],
    index: NearDupIndex,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    batch: int = 1,
) -> RunResult:
    """All of ``prepared`` through :class:`OursRunner`."""
    runner = OursRunner(index, thresholds, batch)
    runner.process(prepared)
    return runner.result


def shingles_3(match_body: str) -> set[bytes]:
    words = [w for w in match_body.split() if w.isalnum()]
    if len(words) < 3:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + 3]).encode() for i in range(len(words) - 2)}


class DatasketchRunner:
    """The obvious alternative: datasketch MinHash + MinHashLSH, every LSH hit is the same story."""

    def __init__(self, threshold: float, storage: dict[str, Any] | None) -> None:
        from datasketch import MinHash, MinHashLSH

        self.minhash = MinHash
        self.lsh = (
            MinHashLSH(threshold=threshold, num_perm=128, storage_config=storage)
            if storage
            else MinHashLSH(threshold=threshold, num_perm=128)
        )
        self.seen_hash: dict[str, str] = {}
        self.result = RunResult({}, UnionFind(), 0.0, [])

    def process(self, prepared: Sequence[Prepared]) -> None:
        res = self.result
        for p in prepared:
            d = p.item
            t0 = time.perf_counter()
            res.clusters.find(d.delivery_id)
            holder = self.seen_hash.get(p.content_hash)
            if holder is not None:
                res.labels[d.delivery_id] = "duplicate"
                res.clusters.union(holder, d.delivery_id)
            else:
                self.seen_hash[p.content_hash] = d.delivery_id
                m = self.minhash(num_perm=128)
                m.update_batch(list(shingles_3(p.match_body)))
                hits = self.lsh.query(m)
                self.lsh.insert(d.delivery_id, m)
                for h in hits:
                    res.clusters.union(h, d.delivery_id)
                res.labels[d.delivery_id] = "near_duplicate" if hits else "new"
            dt = time.perf_counter() - t0
            res.per_story.append(dt)
            res.seconds += dt


def run_datasketch(
    prepared: Sequence[Prepared], threshold: float, storage: dict[str, Any] | None
) -> RunResult:
    runner = DatasketchRunner(threshold, storage)
    runner.process(prepared)
    return runner.result


def interleaved(runners: Sequence[Any], prepared: Sequence[Prepared], chunk: int = 250) -> None:
    """Feed every runner the same deliveries, a chunk at a time in turn, so that load from anything
    else on the machine falls on all of them alike (the throughput ratio is what is reported)."""
    for start in range(0, len(prepared), chunk):
        part = prepared[start : start + chunk]
        for runner in runners:
            runner.process(part)


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    ambiguous_joined: int
    ambiguous_total: int
    label_accuracy: float
    labelled: int
    confusion: Counter[tuple[str, str]]


def score(prepared: Sequence[Prepared], result: RunResult) -> Scores:
    """Pairwise same-story scores over all pairs of deliveries, and label accuracy.

    Pairs the ground truth leaves out (:meth:`bench.corpus_variants.LabelledDelivery.same_story`
    returns None) count neither way.
    """
    items = [p.item for p in prepared]
    by_id = {d.delivery_id: d for d in items}
    clusters: dict[str, list[str]] = defaultdict(list)
    for d in items:
        clusters[result.clusters.find(d.delivery_id)].append(d.delivery_id)
    tp = fp = amb_joined = 0
    for members in clusters.values():
        for i in range(len(members)):
            a = by_id[members[i]]
            for j in range(i + 1, len(members)):
                truth = a.same_story(by_id[members[j]])
                if truth is None:
                    amb_joined += 1
                elif truth:
                    tp += 1
                else:
                    fp += 1
    # All truly same-story pairs: same root, or roots labelled the same story.
    per_root = Counter(d.root for d in items)
    positives = sum(n * (n - 1) // 2 for n in per_root.values())
    ambiguous_total = 0
    done: set[tuple[str, str]] = set()
    for d in items:
        if not d.natural or d.edit not in ("original", "flash", "grown"):
            continue
        for other in d.same_roots | d.ambiguous_roots:
            if other in per_root and (other, d.root) not in done:
                done.add((d.root, other))
                if other in d.same_roots:
                    positives += per_root[d.root] * per_root[other]
                else:
                    ambiguous_total += per_root[d.root] * per_root[other]
    fn = positives - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / positives if positives else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    confusion: Counter[tuple[str, str]] = Counter()
    labelled = correct = 0
    for d in items:
        if d.label is None:
            continue
        got = result.labels[d.delivery_id]
        confusion[(d.label, got)] += 1
        labelled += 1
        correct += got == d.label
    return Scores(
        precision,
        recall,
        f1,
        tp,
        fp,
        fn,
        amb_joined,
        ambiguous_total,
        correct / labelled if labelled else 1.0,
        labelled,
        confusion,
    )


def fit_thresholds(prepared: Sequence[Prepared]) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Refit the same-story logistic regression on all plausible pairs of the tuning split."""
    sigs = [
        signature(
            match_title=p.match_title,
            match_body=p.match_body,
            paragraphs_match=p.paragraphs,
            published_at=p.item.published_at,
            source=p.item.source,
        )
        for p in prepared
    ]
    # The pairs the index proposes: those sharing a band (exact duplicates never reach it).
    config = NearDupIndex.__init__.__kwdefaults__ or {}
    buckets: dict[int, list[int]] = defaultdict(list)
    first_of: dict[str, int] = {}
    for i, s in enumerate(sigs):
        if first_of.setdefault(prepared[i].content_hash, i) != i:
            continue
        for key in s.band_keys(config["rows"], config["bands"], config["lede_bands"]):
            buckets[key].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        pairs.update(
            (members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members))
        )
    xs, ys = [], []
    for a, b in pairs:
        truth = prepared[a].item.same_story(prepared[b].item)
        hours = abs(sigs[a].published_minute - sigs[b].published_minute) / 60
        if truth is None or hours > DEFAULT_THRESHOLDS.window_hours:
            continue
        xs.append(terms(features(sigs[a], sigs[b])))
        ys.append(1.0 if truth else 0.0)
    x, y = np.array(xs), np.array(ys)
    w = np.zeros(x.shape[1])
    for _ in range(60):  # Newton's method with a small ridge term
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + 1e-2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    curve = []
    scores = x @ w
    for cut in (2.0, 3.0, 4.0, 5.0):
        pred = scores >= cut
        tp = float((pred & (y == 1)).sum())
        fp = float((pred & (y == 0)).sum())
        curve.append((cut, tp / max(tp + fp, 1), tp / max(float(y.sum()), 1)))
    return w, curve


def filler_stories(prepared: Sequence[Prepared], n: int, seed: int) -> list[tuple[str, str, list[str]]]:
    """``n`` distinct stories written by a word-bigram model of ``prepared``: (title, body, paragraphs).

    They read like news to the index (the same common phrases, names and places, in the same
    proportions) without being copies of any article, as the other news of a busy week would be.
    Recombining whole corpus sentences instead would make every sentence recur in dozens of
    stories, which no real week does.
    """
    rnd = random.Random(seed)
    successors: dict[str, list[str]] = defaultdict(list)
    starts: list[str] = []
    for p in prepared:
        for para in p.paragraphs:
            words = para.split()
            if len(words) < 4:
                continue
            starts.append(words[0])
            for x, y in itertools.pairwise(words):
                successors[x].append(y)
    lengths = [len(p.match_body.split()) for p in prepared if p.match_body]
    out = []
    for _ in range(n):
        target = max(40, rnd.choice(lengths))
        paras: list[str] = []
        total = 0
        while total < target:
            word = rnd.choice(starts)
            written = [word]
            for _ in range(rnd.randint(15, 60)):
                nxt = successors.get(word)
                word = rnd.choice(nxt) if nxt else rnd.choice(starts)
                written.append(word)
            paras.append(" ".join(written))
            total += len(written)
        title_words = paras[0].split()[: rnd.randint(5, 10)]
        out.append((" ".join(title_words), "\n".join(paras), paras))
    return out


def redis_bytes(client: redis.Redis, keys: Sequence[bytes]) -> int:
    total = 0
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        pipe.memory_usage(key, samples=0)
        if i % 1000 == 999:
            total += sum(x or 0 for x in pipe.execute())
    total += sum(x or 0 for x in pipe.execute())
    return total


def print_scores(name: str, s: Scores, seconds: float, n: int) -> None:
    print(
        f"  {name:<30} P={s.precision:.4f} R={s.recall:.4f} F1={s.f1:.4f} (fp={s.fp} fn={s.fn}, "
        f"{s.ambiguous_joined} unlabelled pairs joined)  "
        f"labels={s.label_accuracy:.4f} of {s.labelled}  {n / seconds:,.0f} stories/s"
    )


def cross_validate(
    prepared: Sequence[Prepared], client: redis.Redis, prefix: str, cuts: Sequence[float]
) -> dict[float, list[Scores]]:
    """Leave one tuning day out: fit the weights on the other days, group and score the day left out,
    at each cut. The committed cut is the best mean F1 among cuts with precision >= 0.99 on every day."""
    days = sorted({p.item.root.split("/")[1] for p in prepared})
    out: dict[float, list[Scores]] = defaultdict(list)
    for day in days:
        weights, _ = fit_thresholds([p for p in prepared if p.item.root.split("/")[1] != day])
        held = [p for p in prepared if p.item.root.split("/")[1] == day]
        for cut in cuts:
            thresholds = dataclasses.replace(
                DEFAULT_THRESHOLDS, weights=tuple(float(w) for w in weights), same_story=cut
            )
            index = NearDupIndex(client, f"{prefix}-cv", expected_stories=len(held))
            index.drop()
            out[cut].append(score(held, run_ours(held, index, thresholds, batch=BATCH)))
            index.drop()
    return out


SPLIT_NAMES = {"tune": "tune", "test": "held-out", "fresh": "second held-out", "last": "third held-out"}


def unread_pairs(split: str, prepared: Sequence[Prepared], result: RunResult) -> set[tuple[str, str, str]]:
    """(split, article id, article id) for each natural pair the labelling rule left ambiguous, with
    no hand label, that ``result`` put in one group."""
    clusters: dict[str, list[cv.LabelledDelivery]] = defaultdict(list)
    for p in prepared:
        clusters[result.clusters.find(p.item.delivery_id)].append(p.item)
    out = set()
    for members in clusters.values():
        roots = {d.root: d for d in members}
        for a, d in roots.items():
            for b in d.ambiguous_roots:
                if b in roots and a < b:
                    out.add((split, a, b))
    return out


def write_unlabelled(path: str | None, pairs: set[tuple[str, str, str]]) -> None:
    if path is None:
        return
    with open(path, "w", encoding="utf-8") as fh:
        for split, a, b in sorted(pairs):
            fh.write(f"{a}\t{b}\t\t# {split}\n")
    print(f"\n{len(pairs)} unread ambiguous natural pairs joined, written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="near-duplicate benchmark")
    parser.add_argument("--redis", default=os.environ.get("AKHBAR_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--quick", action="store_true", help="one held-out day and 20,000 indexed stories")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--indexed", type=int, default=100_000)
    parser.add_argument("--no-fresh", action="store_true", help="leave the fresh held-out days out")
    parser.add_argument(
        "--accuracy-only", action="store_true", help="per-split scores only (no datasketch, no load test)"
    )
    parser.add_argument("--unlabelled", help="write the unread ambiguous natural pairs some system joined")
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(args.redis)
    prefix = f"akhbar-bench-{os.getpid()}"
    test_days = cv.TEST_DAYS[:1] if args.quick else cv.TEST_DAYS
    splits = [("tune", cv.TUNE_DAYS), ("test", test_days)]
    if not args.no_fresh:
        splits.append(("fresh", cv.FRESH_DAYS[:1] if args.quick else cv.FRESH_DAYS))
        splits.append(("last", cv.LAST_DAYS))
    unlabelled: set[tuple[str, str, str]] = set()
    indexed = 20_000 if args.quick else args.indexed
    try:
        log("loading the corpus and generating the labelled sets ...")
        corpus = cv.load_corpus()
        sets = {}
        for name, days in splits:
            stats: dict[str, Any] = {}
            items = cv.generate(seed=args.seed, days=days, corpus=corpus, stats=stats)
            sets[name] = prepare(items)
            edits = Counter(d.edit for d in items)
            labels = Counter(d.label for d in items)
            print(
                f"{SPLIT_NAMES[name]}: days {', '.join(days)}: {stats['articles']} articles, "
                f"{len(items)} deliveries; "
                f"natural same-story pairs {stats['natural_positive_pairs']}; ambiguous pairs checked by "
                f"hand {stats['natural_hand_checked']}, left unlabelled {stats['natural_ambiguous_pairs']}"
            )
            print(f"  edits: {dict(edits.most_common())}")
            print(f"  labels: {dict(labels.most_common())}")

        log("refitting the same-story model on the tuning split ...")
        weights, curve = fit_thresholds(sets["tune"])
        print(
            "\nsame-story model refitted on the tuning split"
            " (committed defaults in worker/neardup/compare.py):"
        )
        for term, fitted, committed in zip(TERMS, weights, DEFAULT_THRESHOLDS.weights, strict=True):
            print(f"  {term:<22} fitted {fitted:9.3f}   committed {committed:9.3f}")
        for cut, p, r in curve:
            print(
                f"  cut {cut:+.1f}: pair precision {p:.4f} recall {r:.4f} (candidate pairs, before grouping)"
            )
        if not args.quick and not args.accuracy_only:
            log("cross-validating the cut on the tuning days (leave one day out) ...")
            cv_scores = cross_validate(sets["tune"], client, prefix, (3.5, 4.0, 4.5, 5.0, 5.5))
            print("  leave-one-tuning-day-out cross-validation (weights refitted on the other days):")
            for cut, fold in cv_scores.items():
                print(
                    f"    cut {cut:.1f}: min precision {min(f.precision for f in fold):.4f}, mean F1 "
                    f"{statistics.mean(f.f1 for f in fold):.4f}"
                    + ("   <- committed" if cut == DEFAULT_THRESHOLDS.same_story else "")
                )

        print("\nakhbar near-duplicate stage (committed thresholds, fresh Redis index per split):")
        ours: dict[str, tuple[RunResult, Scores]] = {}
        for name, prepared in sets.items():
            for batch in (1, BATCH):
                log(f"running akhbar on {name}, micro-batches of {batch} ...")
                index = NearDupIndex(client, f"{prefix}-{name}-{batch}", expected_stories=len(prepared))
                res = run_ours(prepared, index, batch=batch)
                sc = score(prepared, res)
                ours[f"{name}/{batch}"] = (res, sc)
                print_scores(f"{SPLIT_NAMES[name]}, batch {batch}", sc, res.seconds, len(prepared))
                index.drop()
                if name != "tune":
                    unlabelled |= unread_pairs(name, prepared, res)
        for name in sets:
            if name == "tune":
                continue
            print(f"  {SPLIT_NAMES[name]} label confusion (truth -> predicted: count):")
            for (truth, got), n in sorted(ours[f"{name}/1"][1].confusion.items()):
                print(f"    {truth:>15} -> {got:<15} {n}")
        if args.accuracy_only:
            write_unlabelled(args.unlabelled, unlabelled)
            return 0

        log("choosing the datasketch threshold on the tuning split (in-memory storage) ...")
        best_t, best_f1 = 0.5, -1.0
        for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            sc = score(sets["tune"], run_datasketch(sets["tune"], t, None))
            log(f"  datasketch threshold {t}: tune F1 {sc.f1:.4f} P {sc.precision:.4f} R {sc.recall:.4f}")
            if sc.f1 > best_f1:
                best_t, best_f1 = t, sc.f1
        for name in ("fresh", "last"):
            if name in sets:
                res = run_datasketch(sets[name], best_t, None)
                unlabelled |= unread_pairs(name, sets[name], res)
                print(f"\n{SPLIT_NAMES[name]} days, datasketch MinHashLSH (threshold {best_t}, in memory):")
                print_scores("datasketch MinHashLSH", score(sets[name], res), res.seconds, len(sets[name]))
        log(f"running datasketch MinHashLSH(threshold={best_t}) with Redis storage on the held-out split ...")
        url = client.connection_pool.connection_kwargs
        storage = {
            "type": "redis",
            "basename": f"{prefix}-ds".encode(),
            "redis": {
                "host": url.get("host", "127.0.0.1"),
                "port": url.get("port", 6379),
                "db": url.get("db", 0),
            },
        }
        test = sets["test"]
        runners: dict[str, Any] = {
            f"akhbar, batch {batch}": OursRunner(
                NearDupIndex(client, f"{prefix}-side-{batch}", expected_stories=len(test)), batch=batch
            )
            for batch in (1, BATCH)
        }
        runners["datasketch MinHashLSH+Redis"] = DatasketchRunner(best_t, storage)
        interleaved(list(runners.values()), test)
        ds = runners["datasketch MinHashLSH+Redis"].result
        unlabelled |= unread_pairs("test", test, ds)
        write_unlabelled(args.unlabelled, unlabelled)
        ds_keys = list(client.scan_iter(match=f"{prefix}-ds*", count=2000))
        ds_bytes = redis_bytes(client, ds_keys)
        ds_stories = sum(1 for label in ds.labels.values() if label != "duplicate")
        print(
            f"\nheld-out days, side by side, interleaved by chunks of 250 deliveries"
            f" (datasketch threshold {best_t} chosen on the tuning split):"
        )
        for name, runner in runners.items():
            res = runner.result
            print_scores(name, score(test, res), res.seconds, len(test))
        for batch in (1, BATCH):
            our_res = runners[f"akhbar, batch {batch}"].result
            print(
                f"  dedup-stage throughput ratio, akhbar batch {batch}: {ds.seconds / our_res.seconds:.1f}x "
                f"(median per story {statistics.median(our_res.per_story) * 1e3:.3f} ms vs "
                f"{statistics.median(ds.per_story) * 1e3:.3f} ms)"
            )
        print(f"  datasketch Redis bytes per indexed story: {ds_bytes / max(ds_stories, 1):,.0f}")
        for key_batch in range(0, len(ds_keys), 1000):
            client.unlink(*ds_keys[key_batch : key_batch + 1000])

        log(f"indexing {indexed:,} stories ...")
        index = NearDupIndex(client, f"{prefix}-load", expected_stories=indexed + len(test))
        # Other news of the same window: sentences of the corpus articles of every other day,
        # recombined (the held-out days' own sentences would make every filler a candidate).
        others = [r for r in corpus if r["day"] not in set(test_days) | set(cv.TUNE_DAYS)]
        other_prepared = prepare(
            [
                cv.LabelledDelivery(
                    r["id"],
                    r["outlet"],
                    r["id"],
                    r.get("title"),
                    r["body"],
                    r["published_at"],
                    r["id"],
                    None,
                    "original",
                    None,
                    True,
                )
                for r in others
            ]
        )
        fillers = filler_stories(other_prepared, indexed, args.seed)
        base_time = min(p.item.published_at for p in test)
        rnd = random.Random(args.seed)

        def filler_items() -> Any:
            for i, (title, body, paras) in enumerate(fillers):
                at = base_time + timedelta(minutes=rnd.randint(0, 3 * 24 * 60))
                yield (
                    f"filler-{i}",
                    signature(
                        match_title=title,
                        match_body=body,
                        paragraphs_match=paras,
                        published_at=at,
                        source="filler",
                    ),
                )

        t0 = time.perf_counter()
        n = index.rebuild(filler_items())
        log(f"  {n:,} stories indexed in {time.perf_counter() - t0:.1f} s")
        keys = index.redis_keys()
        used = redis_bytes(client, keys)
        print(
            f"\n{n:,} stories indexed: Redis {used / n:,.0f} bytes per indexed story "
            f"(MEMORY USAGE over {len(keys):,} keys)"
        )
        for batch in (1, BATCH):
            loaded = run_ours(test, index, batch=batch)
            print(
                f"  dedup stage with {n:,} stories indexed, batch {batch}: "
                f"median {statistics.median(loaded.per_story) * 1e3:.3f} ms "
                f"per story, p95 {np.quantile(loaded.per_story, 0.95) * 1e3:.3f} ms "
                f"({len(test)} held-out deliveries)"
            )
            log("  re-indexing for the next batch size ...")
            index.rebuild(filler_items())
        index.drop()
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=2000):
            client.unlink(key)
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
