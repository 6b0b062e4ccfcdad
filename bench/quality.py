"""Is the recalled memory the right procedure? Every recall policy on held-out, paraphrased, graded and unrelated tasks.

    python bench/quality.py [--policies query,avefact,hybrid,procedural] [--data ../shared/data] [--format json]

One store holds everything, so cross-domain confusions count: the ALFWorld expert runs (minus a held-out 20% of task
folders, picked by a stable hash; their tasks are the "standard" queries), the other ALFWorld sets, the 500 WebShop
episodes, the SWE-bench and SWE-agent runs and `examples/trajectories`. Memories are built as `memp ingest` builds
them (offline distiller, proceduralization). The store is cached under $MEMP_QUALITY_CACHE (default
/tmp/memp-quality), keyed by the files it was built from.

Printed per policy: hit@1 / hit@5 / MRR@10 on the standard held-out tasks and on the hand-written paraphrases
(`bench/quality/paraphrases.jsonl`, dev and test, per domain), NDCG@10 on the graded set (`graded.jsonl`, grades
from `relations.json`), the share of the top 5 spent on near-copies, and the floor figures: for a range of floors,
the share of unrelated tasks (`unrelated.jsonl`) that get nothing and of in-domain tasks that still get a match.
A memory is right when it carries the query's label: its ALFWorld task type (without `_in_recep`, so the bundled
household examples share the types), its SWE repository, its example task type, or `webshop` for a WebShop episode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ROOT / "bench" / "quality"
HELD_OUT = 0.2
K = 10
FLOORS = (0.0, 0.2, 0.22, 0.24, 0.25, 0.26, 0.28, 0.3, 0.32, 0.33, 0.34, 0.35, 0.36, 0.38, 0.4, 0.42, 0.45, 0.5, 0.55, 0.6)
SCORE_FLOORED = {"procedural"}
# Version of what the cached store holds; bump when the store's contents should change.
STORE_VERSION = "1"


@dataclass
class Query:
    """A task to recall for, with what a right memory shares."""

    task: str
    label: str
    domain: str
    split: str = "test"


@dataclass
class Hit:
    """One recalled memory as the harness sees it."""

    memory_id: int
    score: float
    similarity: float
    labels: frozenset[str]
    task: str
    count: int = 1


@dataclass
class Corpus:
    """The store and the queries measured against it."""

    db: Path
    standard: list[Query]
    paraphrases: list[Query]
    graded: list[Query]
    unrelated: list[Query]
    groups: list[set[str]] = field(default_factory=list)


def canonical(label: str | None) -> str | None:
    """Return a label as the harness compares it: ALFWorld's `_in_recep` suffix dropped."""
    return label.removesuffix("_in_recep") if label else None


def is_held_out(task_dir: str) -> bool:
    """Return True for the stable 20% of ALFWorld task folders whose tasks are queries, not memories."""
    digest = hashlib.sha256(task_dir.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT


def domain_of(source_file: str | None) -> str:
    """Return the domain a memory came from, by its source file."""
    path = source_file or ""
    for marker, domain in (("webshop", "webshop"), ("swe", "swe"), ("alfworld", "alfworld")):
        if marker in path:
            return domain
    return Path(path).stem  # examples/trajectories/<domain>.jsonl


def memory_labels(memory: Any) -> frozenset[str]:
    """Return the labels a memory counts as right for."""
    labels = set()
    task_type = canonical(memory.metadata.get("task_type"))
    if task_type:
        labels.add(task_type)
    if domain_of(memory.source_file) == "webshop":
        labels.add("webshop")
    return frozenset(labels)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the records of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _memory_sources(data: Path, trials: int | None = None) -> tuple[list[Path], list[Path]]:
    """Return (files whose runs become memories, ALFWorld expert files held out as queries).

    `trials` keeps only the first few trials of each ALFWorld task folder as memories (a smaller store for tests).
    """
    expert = sorted((data / "alfworld-expert").rglob("gt_traj.json"))
    held = [f for f in expert if is_held_out(f.parent.parent.name)]
    kept = [f for f in expert if not is_held_out(f.parent.parent.name)]
    if trials is not None:
        seen: dict[str, int] = {}
        fewer = []
        for f in kept:
            seen[f.parent.parent.name] = seen.get(f.parent.parent.name, 0) + 1
            if seen[f.parent.parent.name] <= trials:
                fewer.append(f)
        kept = fewer
    others = [
        data / "react-alfworld" / "alfworld_3prompts.json",
        data / "memp-alfworld" / "alfworld_examples.json",
        data / "react-webshop" / "WebShop_ipynb_cell7_output.txt",
        *sorted((data / "mini-swe-agent" / "trajs").rglob("*.traj.json")),
        *sorted((data / "swe-agent").rglob("*.traj")),
        *sorted((ROOT / "examples" / "trajectories").glob("*.jsonl")),
    ]
    return kept + [f for f in others if f.exists()], held


def build_store(
    data: Path, cache: Path, say: Callable[[str], None], trials: int | None = None
) -> tuple[Path, list[Query]]:
    """Return the cached store (built when missing) and the standard held-out queries."""
    from memp_cli import formats

    files, held = _memory_sources(data, trials)
    standard: dict[str, Query] = {}
    for f in held:
        for traj in formats.read(formats.Source(f, str(f))):
            label = canonical(traj.metadata.get("task_type")) or ""
            standard.setdefault(traj.task.strip().lower(), Query(traj.task.strip(), label, "alfworld"))
    key = hashlib.sha256("\n".join([STORE_VERSION, *map(str, files)]).encode()).hexdigest()[:16]
    db = cache / f"store-{key}.db"
    if not db.exists():
        from memp_cli.ingest import IngestOptions, store_trajectories
        from memp_cli.store import open_store

        cache.mkdir(parents=True, exist_ok=True)
        partial = db.with_suffix(".partial")
        for stale in cache.glob(partial.name + "*"):
            stale.unlink()
        started = time.perf_counter()
        store = open_store(partial)
        outcomes: dict[str, Any] = {}
        swe_outcomes = data / "mini-swe-agent" / "outcomes.json"
        if swe_outcomes.exists():
            outcomes = formats.read_outcomes(formats.Source(swe_outcomes, str(swe_outcomes)))
        read = formats.ReadOptions(outcomes=outcomes)
        runs = [traj for f in files for traj in formats.read(formats.Source(f, str(f)), options=read)]
        store_trajectories(store, runs, IngestOptions(model="offline"))
        store.close()
        for suffix in ("-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
        partial.rename(db)
        say(f"built {db} from {len(runs)} runs in {time.perf_counter() - started:.0f} s")
    return db, sorted(standard.values(), key=lambda q: q.task)


def load_corpus(data: Path, cache: Path, say: Callable[[str], None], trials: int | None = None) -> Corpus:
    """Return the store and every query set."""
    db, standard = build_store(data, cache, say, trials)
    para = [Query(r["task"], canonical(r["label"]) or "", r["domain"], r["split"]) for r in read_jsonl(SETS / "paraphrases.jsonl")]
    graded = [Query(r["task"], canonical(r["label"]) or "", r["domain"]) for r in read_jsonl(SETS / "graded.jsonl")]
    unrelated = [Query(r["task"], "", r["kind"], r["split"]) for r in read_jsonl(SETS / "unrelated.jsonl")]
    relations = json.loads((SETS / "relations.json").read_text())
    groups = [{canonical(g) or "" for g in group} for group in relations["groups"]]
    return Corpus(db, standard, para, graded, unrelated, groups)


# -- running a policy ---------------------------------------------------------------------------------------------

Runner = Callable[[Any, Sequence[str], int], list[list[Hit]]]


def memp_policy(policy: str, min_score: float | None = 0.0) -> Runner:
    """Return a runner that recalls through `memp_cli.recall.recall_many` under `policy`."""

    def run(store: Any, tasks: Sequence[str], k: int) -> list[list[Hit]]:
        from memp_cli.recall import recall_many

        out = []
        for start in range(0, len(tasks), 64):
            chunk = list(tasks[start : start + 64])
            for recall in recall_many(store, chunk, k=k, policy=policy, min_score=min_score, log=False, seed=start):
                out.append(
                    [
                        Hit(
                            m.memory.id,
                            m.score,
                            m.similarity if m.similarity is not None else m.score,
                            memory_labels(m.memory),
                            m.memory.task,
                            getattr(m, "count", 1),
                        )
                        # Retrieval is judged on its own ranking, before failed runs are set apart as warnings.
                        for m in sorted([*recall.matches, *recall.warnings], key=lambda m: -m.score)
                    ]
                )
        return out

    return run


def is_right(query: Query, hit: Hit) -> bool:
    """Return True when the memory carries the query's label."""
    return query.label in hit.labels


def grade(query: Query, hit: Hit, groups: Sequence[set[str]]) -> int:
    """Return 2 for the same label, 1 for a label sharing a sub-procedure (relations.json), else 0."""
    if query.label in hit.labels:
        return 2
    mine = _expand(query.label)
    theirs = set().union(*(_expand(label) for label in hit.labels)) if hit.labels else set()
    return int(any(mine & group and theirs & group for group in groups))


def _expand(label: str) -> set[str]:
    """Return a label and its wildcard class ('@repository' for owner/name labels)."""
    return {label, "@repository"} if "/" in label and not label.startswith("ctf/") else {label}


def ranking(query: Query, hits: Sequence[Hit]) -> dict[str, float]:
    """Return hit@1, hit@5 and reciprocal rank (over the top K) of one recall."""
    right = [i for i, hit in enumerate(hits[:K]) if is_right(query, hit)]
    first = right[0] if right else None
    return {
        "hit@1": float(first == 0),
        "hit@5": float(first is not None and first < 5),
        "mrr": 1.0 / (first + 1) if first is not None else 0.0,
    }


def ndcg(query: Query, hits: Sequence[Hit], ideal: Sequence[int], groups: Sequence[set[str]]) -> float:
    """Return NDCG@K of a recall against the store's ideal ordering of grades."""
    gains = [grade(query, hit, groups) for hit in hits[:K]]
    dcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains))
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal[:K]))
    return dcg / idcg if idcg else 0.0


def near_copy_share(results: Sequence[Sequence[Hit]]) -> float:
    """Return the share of top-5 slots holding a memory whose task repeats a higher-ranked one's."""
    slots = copies = 0
    for hits in results:
        seen: set[str] = set()
        for hit in hits[:5]:
            key = " ".join(hit.task.lower().split())
            slots += 1
            copies += key in seen
            seen.add(key)
    return copies / slots if slots else 0.0


def mean(values: Iterable[float]) -> float:
    """Return the mean, 0 for nothing."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def evaluate(name: str, runner: Runner, corpus: Corpus, store: Any, all_labels: list[frozenset[str]]) -> dict[str, Any]:
    """Return every figure for one policy."""
    started = time.perf_counter()
    sets = {
        "standard": corpus.standard,
        "paraphrases": corpus.paraphrases,
        "graded": corpus.graded,
        "unrelated": corpus.unrelated,
    }
    tasks = [q.task for qs in sets.values() for q in qs]
    results = runner(store, tasks, K)
    ms = 1000 * (time.perf_counter() - started) / len(tasks)
    by_set: dict[str, list[tuple[Query, list[Hit]]]] = {}
    at = 0
    for key, queries in sets.items():
        by_set[key] = list(zip(queries, results[at : at + len(queries)]))
        at += len(queries)
    out: dict[str, Any] = {"policy": name, "ms_per_query": round(ms, 1)}

    def block(pairs: Sequence[tuple[Query, list[Hit]]]) -> dict[str, float]:
        rows = [ranking(q, hits) for q, hits in pairs]
        return {key: round(mean(r[key] for r in rows), 3) for key in ("hit@1", "hit@5", "mrr")} | {"n": len(rows)}

    out["standard"] = block(by_set["standard"])
    para: dict[str, Any] = {}
    for split in ("dev", "test"):
        pairs = [(q, h) for q, h in by_set["paraphrases"] if q.split == split]
        para[split] = block(pairs)
        domains = sorted({q.domain for q, _ in pairs})
        para[split]["domains"] = {d: block([(q, h) for q, h in pairs if q.domain == d]) for d in domains}
    out["paraphrases"] = para
    ndcgs = []
    for q, hits in by_set["graded"]:
        ideal = sorted((grade(q, Hit(0, 0, 0, labels, ""), corpus.groups) for labels in all_labels), reverse=True)
        ndcgs.append(ndcg(q, hits, ideal, corpus.groups))
    out["graded_ndcg@10"] = round(mean(ndcgs), 3)
    out["near_copies@5"] = round(near_copy_share([h for q, h in by_set["standard"] + by_set["paraphrases"]]), 3)

    def top(hits: list[Hit]) -> float:
        # What recall's floor compares: the procedural policy's own score, the other policies' task cosine.
        return (hits[0].score if name in SCORE_FLOORED else hits[0].similarity) if hits else -1.0

    unrelated = [top(h) for _, h in by_set["unrelated"]]
    standard = [top(h) for _, h in by_set["standard"]]
    paraphrase = [top(h) for _, h in by_set["paraphrases"]]
    for split in ("all", "dev"):
        un = [top(h) for q, h in by_set["unrelated"] if split in ("all", q.split)]
        para_split = [top(h) for q, h in by_set["paraphrases"] if split in ("all", q.split)]
        out["floors" if split == "all" else "floors_dev"] = [
            {
                "floor": f,
                "unrelated_nothing": round(mean(float(s < f) for s in un), 3),
                "in_domain_matched": round(mean(float(s >= f) for s in standard + para_split), 3),
                "paraphrase_matched": round(mean(float(s >= f) for s in para_split), 3),
            }
            for f in FLOORS
        ]
    out["top1_similarity"] = {
        "unrelated_p50_p95_max": _percentiles(unrelated),
        "standard_p5_p50": _low_percentiles(standard),
        "paraphrase_p5_p50": _low_percentiles(paraphrase),
    }
    return out


def _percentiles(values: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    return [round(statistics.median(ordered), 3), round(ordered[int(0.95 * (len(ordered) - 1))], 3), round(ordered[-1], 3)]


def _low_percentiles(values: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    return [round(ordered[int(0.05 * (len(ordered) - 1))], 3), round(statistics.median(ordered), 3)]


def default_floor(policy: str, corpus: Corpus, store: Any) -> dict[str, float]:
    """Return what recall does by default (no --min-score): unrelated tasks with nothing, in-domain with a match."""
    runner = memp_policy(policy, min_score=None)
    unrelated = runner(store, [q.task for q in corpus.unrelated], 1)
    in_domain = runner(store, [q.task for q in corpus.standard + corpus.paraphrases], 1)
    return {
        "unrelated_nothing": round(mean(float(not h) for h in unrelated), 3),
        "in_domain_matched": round(mean(float(bool(h)) for h in in_domain), 3),
    }


# -- printing -----------------------------------------------------------------------------------------------------


def render(rows: Sequence[dict[str, Any]]) -> str:
    """Return the figures as Markdown tables."""
    lines = ["| policy | standard hit@1 / hit@5 / MRR | paraphrase dev | paraphrase test | graded NDCG@10 | near-copies in top 5 | ms/query |"]
    lines.append("|---|---|---|---|---|---|---|")

    def three(b: dict[str, float]) -> str:
        return f"{b['hit@1']:.3f} / {b['hit@5']:.3f} / {b['mrr']:.3f}"

    for r in rows:
        lines.append(
            f"| {r['policy']} | {three(r['standard'])} | {three(r['paraphrases']['dev'])} | "
            f"{three(r['paraphrases']['test'])} | {r['graded_ndcg@10']:.3f} | {r['near_copies@5']:.3f} | "
            f"{r['ms_per_query']} |"
        )
    for split in ("dev", "test"):
        domains = sorted(rows[0]["paraphrases"][split]["domains"])
        n = {d: rows[0]["paraphrases"][split]["domains"][d]["n"] for d in domains}
        lines += ["", f"Paraphrases, {split}: hit@1 (MRR) per domain", ""]
        lines.append("| policy | " + " | ".join(f"{d} ({n[d]})" for d in domains) + " |")
        lines.append("|---" * (len(domains) + 1) + "|")
        for r in rows:
            cells = r["paraphrases"][split]["domains"]
            lines.append(
                f"| {r['policy']} | " + " | ".join(f"{cells[d]['hit@1']:.2f} ({cells[d]['mrr']:.2f})" for d in domains) + " |"
            )
    for key, title in (("floors", "all"), ("floors_dev", "dev split only")):
        heading = f"Floors on the top match ({title}): unrelated with nothing / in-domain matched / paraphrase matched"
        lines += ["", heading, ""]
        lines.append("| floor | " + " | ".join(r["policy"] for r in rows) + " |")
        lines.append("|---" * (len(rows) + 1) + "|")
        for i, floor in enumerate(rows[0][key]):
            row_cells = [r[key][i] for r in rows]
            lines.append(
                f"| {floor['floor']} | "
                + " | ".join(
                    f"{c['unrelated_nothing']:.2f} / {c['in_domain_matched']:.3f} / {c['paraphrase_matched']:.2f}"
                    for c in row_cells
                )
                + " |"
            )
    lines += ["", "Calibrated floor: the lowest giving nothing to 95% of the dev split's unrelated tasks", ""]
    for r in rows:
        fit = [f for f in r["floors_dev"] if f["unrelated_nothing"] >= 0.95]
        if fit:
            every = next(f for f in r["floors"] if f["floor"] == fit[0]["floor"])
            lines.append(
                f"- {r['policy']}: {fit[0]['floor']} (all splits: unrelated with nothing {every['unrelated_nothing']:.3f}, "
                f"in-domain matched {every['in_domain_matched']:.3f}, paraphrases matched {every['paraphrase_matched']:.3f})"
            )
    lines += ["", "Default floor (no --min-score): unrelated with nothing / in-domain matched", ""]
    for r in rows:
        if r.get("default"):
            d = r["default"]
            lines.append(f"- {r['policy']}: {d['unrelated_nothing']:.3f} / {d['in_domain_matched']:.3f}")
    lines += ["", "Top-match value: unrelated p50/p95/max; standard p5/p50; paraphrase p5/p50", ""]
    for r in rows:
        t = r["top1_similarity"]
        lines.append(
            f"- {r['policy']}: unrelated {t['unrelated_p50_p95_max']}, standard {t['standard_p5_p50']}, "
            f"paraphrase {t['paraphrase_p5_p50']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--cache", default=os.environ.get("MEMP_QUALITY_CACHE", "/tmp/memp-quality"))
    parser.add_argument("--policies", default="procedural,query,avefact,hybrid")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument("--trials", type=int, help="keep only this many trials of each ALFWorld task as memories")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "alfworld-expert").exists():
        sys.exit(f"skipped: {data / 'alfworld-expert'} is absent")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    corpus = load_corpus(data, Path(args.cache), say, args.trials)
    from memp_cli.store import open_store

    store = open_store(corpus.db)
    store.vectors.preload()
    from memp_cli.recall import POLICIES

    active = store.memories.list(status="active")
    all_labels = [memory_labels(m) for m in active]
    say(f"{len(active)} memories; {len(corpus.standard)} standard, {len(corpus.paraphrases)} paraphrase, "
        f"{len(corpus.graded)} graded, {len(corpus.unrelated)} unrelated queries")
    rows = []
    for name in args.policies.split(","):
        row = evaluate(name, memp_policy(name), corpus, store, all_labels)
        if name in POLICIES:
            row["default"] = default_floor(name, corpus, store)
        rows.append(row)
        say(f"{name}: done")
    print(json.dumps(rows, indent=1) if args.format == "json" else render(rows))


if __name__ == "__main__":
    main()
