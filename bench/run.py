"""memp's speed at several store sizes, side by side with what a user would otherwise use (`llm similar`).

    python bench/run.py --sizes 1000,10000,100000 [--runs 20] [--format json] [--search-only]

Per size it builds a store of synthetic but realistic memories in bounded memory (bench/build.py: tasks and steps
from templates across household, shell, coding and shopping work, vectors mixed from the tasks' MiniLM embeddings;
past --real-limit memories, copies made inside SQLite) and measures:

- `memp recall` as a fresh process, end to end: median and p95 of --runs runs, and its peak RSS;
- the vector search alone, in process: median and p95, recall@5 against an exact float32 scan, where its time goes
  (side-file state check, choosing the lists' rows, ranking them by their codes, rescore), the first search with the
  store's pages out of the page cache, and the recall log's write;
- the peers on the same vectors where installed (numpy memmap flat scan, FAISS flat, chroma), and memp's ratio;
- batch recall throughput (`memp recall -`, queries per second, start-up included);
- ingest throughput with the offline distiller (trajectories per second) and store bytes per memory;
- the same search the way llm does it out of the box (`llm similar` over an llm collection of the same vectors),
  in process and as a fresh process, and memp's speed-up over it (up to --llm-limit memories).

`--db postgresql://...` builds each store in a schema of that database instead (bench/pg_build.py).
`--search-only` builds the stores and measures the in-process search alone (JSON out), for comparing storage changes.

Numbers are printed, never asserted. The machine's other load moves them: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memp_cli.store import is_url, open_store
from memp_cli.store.bitfile import side_path

from build import Built, build_apart, task, trajectory
from peers import all_peers
from pg_build import size_bytes, store_at

MEMP = [sys.executable, "-m", "memp_cli"]
LLM = [sys.executable, "-m", "llm"]


# Runs the command in a fresh, small process and reports its time and peak RSS. Measured from the bench process
# itself, a child's peak RSS starts at the bench's own (the kernel carries the parent's high-water mark across
# fork and exec), which at 100k memories is gigabytes of vectors that memp never touches.
SPAWN = """
import json, os, resource, subprocess, sys, time
with open(sys.argv[1], "rb") as feed:
    started = time.perf_counter()
    code = subprocess.call(sys.argv[2:], stdin=feed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "seconds": seconds, "rss_mb": usage.ru_maxrss // 1024}))
"""


def timed_process(cmd: list[str], stdin: str | None = None) -> tuple[float, int]:
    """Return (wall seconds, peak RSS in MB) of one fresh process."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as feed:
        feed.write(stdin or "")
        feed.flush()
        out = subprocess.run([sys.executable, "-c", SPAWN, feed.name, *cmd], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    if report["code"] != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed with {report['code']}")
    return report["seconds"], report["rss_mb"]


def memp_install() -> str:
    """Return "editable" when this Python loads memp's editable-install hook at every start, else "regular"."""
    import site

    hooks = [hook for folder in site.getsitepackages() for hook in Path(folder).glob("__editable__*memp*.pth")]
    return "editable" if hooks else "regular"


def pct(values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def reference(vectors_path: Path, queries: Any) -> Any:
    """Return each query's exact 5th-best cosine over the float32 vectors (streamed from the memmap)."""
    import numpy as np

    matrix = np.load(vectors_path, mmap_mode="r")
    best = np.full((len(queries), 5), -np.inf, dtype=np.float32)
    for start in range(0, len(matrix), 100_000):
        sims = queries @ np.asarray(matrix[start : start + 100_000]).T
        both = np.concatenate([best, sims], axis=1)
        best = -np.partition(-both, 4, axis=1)[:, :5]
    return best.min(axis=1)


def evict(*paths: Path) -> None:
    """Drop these files' pages from the page cache (this process's files only; nothing else is disturbed)."""
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def in_process_search(built: Built, queries: int, seed: int, exact_runs: int, chroma_limit: int) -> dict[str, Any]:
    """Return search latency, recall@5 and where the time goes, for memp's default, binary and exact paths."""
    import numpy as np

    matrix = np.load(built.vectors, mmap_mode="r")
    rng = np.random.default_rng(seed)
    picks = np.asarray(matrix[np.sort(rng.integers(0, len(matrix), queries))]) + 0.05 * np.asarray(
        matrix[np.sort(rng.integers(0, len(matrix), queries))])
    picks = (picks / np.linalg.norm(picks, axis=1, keepdims=True)).astype(np.float32)
    fifth = reference(built.vectors, picks)

    def recall(n: int, got: list[int]) -> float:
        # A result counts when it is as similar as the exact 5th best: ties (near-identical tasks) are not misses.
        return sum(float(matrix[i - 1] @ picks[n]) >= fifth[n] - 1e-5 for i in got) / 5

    db = built.db
    # A store file and its side file; a PostgreSQL store has none here (its pages are the server's).
    files = [Path(db), side_path(Path(db))] if isinstance(db, Path) else []
    # The build's pages written out first: dirty pages cannot be dropped (the cold search found them cached), and
    # their writeback ran through the timed searches. A user's store is long written when they recall.
    os.sync()
    evict(*files)
    store: Any = open_store(db)
    started = time.perf_counter()
    store.vectors.nearest(picks[0].tolist(), 5)
    cold_ms = 1000 * (time.perf_counter() - started)
    out: dict[str, Any] = {"cold_first_ms": round(cold_ms, 1)}
    for path in (p for p in files if p.exists()):  # warm: back in the page cache
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass
    for name, exact in (("default", None), ("binary", False), ("exact", True)):
        times, recalls, parts = [], [], []
        for n, q in enumerate(picks[:exact_runs] if exact else picks):
            started = time.perf_counter()
            got = store.vectors.nearest(q.tolist(), 5, exact=exact)
            times.append(1000 * (time.perf_counter() - started))
            recalls.append(recall(n, [i for i, _ in got]))
            parts.append(dict(store.vectors.timings))
        out[name] = {
            "ms_median": round(statistics.median(times), 2),
            "ms_p95": round(pct(times, 0.95), 2),
            "recall_at_5": round(statistics.fmean(recalls), 4),
        }
        if name == "binary":
            out[name]["parts_ms_median"] = {key: round(statistics.median(p[key] for p in parts), 3) for key in parts[0]}
    log_ms = []
    for n in range(min(20, queries)):
        hits = store.vectors.nearest(picks[n].tolist(), 5)
        started = time.perf_counter()
        store.log.record_recalls([(f"bench-{uuid.uuid4().hex}", "bench task", "query", 5, hits)])
        log_ms.append(1000 * (time.perf_counter() - started))
    out["log_write_ms_median"] = round(statistics.median(log_ms), 2)
    store.close()
    out["peers"] = all_peers(built.vectors.parent, built.vectors, picks, recall, chroma_limit)
    for figures in out["peers"].values():
        if "ms_median" in figures:
            figures["memp_time_ratio"] = round(out["default"]["ms_median"] / max(figures["ms_median"], 1e-3), 3)
    return out


def llm_baseline(tmp: Path, vectors_path: Path, query: str, runs: int) -> dict[str, Any]:
    """Return `llm similar` timings over an llm collection holding the same vectors."""
    import llm
    import numpy as np
    import sqlite_utils

    matrix = np.load(vectors_path, mmap_mode="r")
    db_path = tmp / "llm-embeddings.db"
    db = sqlite_utils.Database(db_path)
    collection = llm.Collection("bench", db, model_id="memp-minilm")
    cid = db.execute("SELECT id FROM collections WHERE name = 'bench'").fetchone()[0]
    db.table("embeddings").insert_all(
        (
            {"collection_id": cid, "id": str(i + 1), "embedding": struct.pack(f"{len(v)}f", *v), "content": None,
             "updated": 0}
            for i, v in enumerate(np.asarray(row, dtype=np.float32).tolist() for row in matrix)
        ),
        batch_size=5000,
    )
    q = np.asarray(matrix[0], dtype=np.float32).tolist()
    times = []
    for _ in range(max(3, runs // 4)):
        started = time.perf_counter()
        collection.similar_by_vector(q, 5)
        times.append(1000 * (time.perf_counter() - started))
    fresh = [timed_process([*LLM, "similar", "bench", "-c", query, "-d", str(db_path), "-n", "5"])[0]
             for _ in range(3)]
    return {"in_process_ms_median": round(statistics.median(times), 1),
            "fresh_process_ms_median": round(1000 * statistics.median(fresh), 1)}


def ingest_throughput(tmp: Path, n: int, seed: int, where: str | None = None) -> dict[str, Any]:
    """Return offline ingest throughput (`memp ingest`, proceduralization) of `n` trajectories."""
    rng = random.Random(seed + 1)
    src = tmp / "runs.jsonl"
    with src.open("w") as out:
        for i in range(n):
            run = trajectory(rng, i)
            out.write(json.dumps(run.to_dict()) + "\n")
    with store_at(where, tmp, "ingest") as db:
        seconds, rss = timed_process([*MEMP, "ingest", str(src), "--db", db, "-m", "offline"])
    return {"trajectories": n, "per_second": round(n / seconds, 1), "peak_rss_mb": rss}


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Return every figure for one store size."""
    phases: dict[str, float] = {}  # wall seconds of each part of this size's run: where the bench's time goes
    clock = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - clock[0], 1)
        clock[0] = now

    with tempfile.TemporaryDirectory(prefix="memp-bench-") as tmpdir, store_at(args.db, Path(tmpdir), str(n)) as where:
        tmp = Path(tmpdir)
        built = build_apart(tmp, n, args.seed, args.real_limit, where if is_url(where) else None)
        phase("build")
        db = built.db
        side = side_path(Path(db)) if isinstance(db, Path) else None
        size = {
            "size": n,
            "store_bytes_per_memory": round(size_bytes(str(db)) / n),
            "side_file_bytes_per_memory": round(side.stat().st_size / n) if side and side.exists() else 0,
            "build_seconds": round(built.seconds, 1),
            "build_per_second": round(n / built.seconds),
            "ingest_path_per_second": round(built.ingest_path_per_s),
            "clone_path_per_second": round(built.clone_path_per_s),
            "build_peak_rss_mb": built.peak_rss_mb,
            "side_file_build_seconds": round(built.side_file_seconds, 2),
            "phase_seconds": phases,
        }
        exact_runs = 5 if n > 100_000 else 100
        if args.search_only:
            search = in_process_search(built, min(100, args.runs * 5), args.seed, exact_runs, args.chroma_limit)
            phase("search")
            return {**size, "search": search}
        rng = random.Random(args.seed + 2)
        queries = [task(rng) for _ in range(args.runs)]
        # One recall first, so the per-machine model cache (and the procedure index) exist as after a first call.
        policy = ["-p", args.policy] if args.policy else []
        started = time.perf_counter()
        timed_process([*MEMP, "recall", queries[0], "--db", str(db), "-f", "json", *policy])
        first_s = time.perf_counter() - started
        phase("first_recall")
        fresh, rss = [], []
        for q in queries:
            seconds, peak = timed_process([*MEMP, "recall", q, "--db", str(db), "-f", "json", *policy])
            fresh.append(1000 * seconds)
            rss.append(peak)
        phase("fresh_recalls")
        batch_tasks = [task(rng) for _ in range(args.batch)]
        batch_s, _ = timed_process([*MEMP, "recall", "-", "--db", str(db), *policy],
                                   stdin="\n".join(batch_tasks) + "\n")
        phase("batch_recall")
        search = in_process_search(built, min(100, args.runs * 5), args.seed, exact_runs, args.chroma_limit)
        phase("search_and_peers")
        row: dict[str, Any] = {
            **size,
            "first_recall_seconds": round(first_s, 1),
            "recall_fresh_ms_median": round(statistics.median(fresh), 1),
            "recall_fresh_ms_p95": round(pct(fresh, 0.95), 1),
            "recall_peak_rss_mb": max(rss),
            "search": search,
            "batch_recall_qps": round(args.batch / batch_s, 1),
        }
        if not args.no_llm and n <= args.llm_limit:
            base = llm_baseline(tmp, built.vectors, queries[0], args.runs)
            row["llm_similar"] = base
            row["speedup_in_process"] = round(base["in_process_ms_median"] / max(search["default"]["ms_median"], 1e-3), 1)
            row["speedup_fresh_process"] = round(base["fresh_process_ms_median"] / row["recall_fresh_ms_median"], 2)
            phase("llm_similar")
        elif not args.no_llm:
            print(f"bench: llm similar skipped at {n:,} memories: above --llm-limit {args.llm_limit:,}",
                  file=sys.stderr)
        return row


def table(rows: list[dict[str, Any]], ingest: dict[str, Any], help_ms: float, install: str) -> None:
    """Print the results for people: one column per store size."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"memp bench ({install} install) · memp --help {help_ms:.0f} ms · ingest {ingest['per_second']} "
                    f"trajectories/s (offline distiller, peak {ingest['peak_rss_mb']} MB)", title_justify="left")
    t.add_column("")
    for r in rows:
        t.add_column(f"{r['size']:,} memories", justify="right")

    def line(name: str, fn: Any) -> None:
        t.add_row(name, *(fn(r) for r in rows))

    def peer(name: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            p = r["search"]["peers"][name]
            if "skipped" in p:
                return "skipped"
            return f"{p['ms_median']:.2f}, {p['recall_at_5']:.3f}, {p['memp_time_ratio']}x"
        return cell

    line("memp recall, fresh process ms (p50 / p95)",
         lambda r: f"{r['recall_fresh_ms_median']:.0f} / {r['recall_fresh_ms_p95']:.0f}")
    line("first recall (builds the procedure index), s", lambda r: f"{r['first_recall_seconds']}")
    line("peak RSS of a recall, MB", lambda r: str(r["recall_peak_rss_mb"]))
    line("search in process ms (p50 / p95)",
         lambda r: f"{r['search']['default']['ms_median']:.2f} / {r['search']['default']['ms_p95']:.2f}")
    line("recall@5 vs exact float32", lambda r: f"{r['search']['default']['recall_at_5']:.3f}")
    line("list probe + rescore: ms p50, recall@5",
         lambda r: f"{r['search']['binary']['ms_median']:.2f}, {r['search']['binary']['recall_at_5']:.3f}")
    line("  of it: state / lists / ranking by the codes / rescore, ms", lambda r: " / ".join(
        f"{v:.2f}" for v in r["search"]["binary"]["parts_ms_median"].values()))
    line("first search, store out of page cache, ms", lambda r: f"{r['search']['cold_first_ms']:.0f}")
    line("recall log write, ms p50", lambda r: f"{r['search']['log_write_ms_median']:.2f}")
    line("exact scan ms p50", lambda r: f"{r['search']['exact']['ms_median']:.1f}")
    line("numpy memmap flat: ms, recall@5, memp/peer", peer("numpy_memmap"))
    line("FAISS flat (1 thread): ms, recall@5, memp/peer", peer("faiss_flat"))
    line("chroma HNSW: ms, recall@5, memp/peer", peer("chroma"))
    line("batch recall (memp recall -), q/s", lambda r: f"{r['batch_recall_qps']:.0f}")
    line("store bytes per memory (+ side file)",
         lambda r: f"{r['store_bytes_per_memory']:,} + {r['side_file_bytes_per_memory']:,}")
    line("build: memories/s (ingest path / clone path / all)", lambda r: (
        f"{r['ingest_path_per_second']:,} / {r['clone_path_per_second']:,} / {r['build_per_second']:,}"))
    line("build: peak RSS, MB", lambda r: f"{r['build_peak_rss_mb']:,}")
    line("bench time, s (" + " / ".join(rows[0]["phase_seconds"]) + ")" if rows else "bench time, s",
         lambda r: " / ".join(f"{v:.0f}" for v in r["phase_seconds"].values()))
    if rows and any("llm_similar" in r for r in rows):
        line("llm similar ms, in process / fresh", lambda r: (
            f"{r['llm_similar']['in_process_ms_median']:.0f} / {r['llm_similar']['fresh_process_ms_median']:.0f}"
            if "llm_similar" in r else "skipped"))
        line("memp speed-up, in process / fresh", lambda r: (
            f"{r['speedup_in_process']}x / {r['speedup_fresh_process']}x" if "llm_similar" in r else "skipped"))
    Console(width=180).print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=20, help="fresh-process recalls per size")
    parser.add_argument("--batch", type=int, default=500, help="tasks in the batch recall")
    parser.add_argument("--ingest", type=int, default=1000, help="trajectories in the ingest run")
    parser.add_argument("--real-limit", type=int, default=20000,
                        help="memories built through store.memories.add; past it, copies made in SQLite")
    parser.add_argument("--llm-limit", type=int, default=100000, help="largest size given the llm similar baseline")
    parser.add_argument("--chroma-limit", type=int, default=100000, help="largest size given to chroma")
    parser.add_argument("--no-llm", action="store_true", help="skip the llm similar baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policy", help="recall policy of the fresh and batch recalls (default: memp's default)")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--search-only", action="store_true", help="only build the stores and time the search (JSON)")
    parser.add_argument("--db", help="a postgresql:// URL: build each store in a schema of that database (pg_build.py)")
    args = parser.parse_args()
    if "LLM_USER_PATH" not in os.environ:  # llm's collections and logs of this run, removed when it ends
        import atexit
        import shutil

        llm_home = tempfile.mkdtemp(prefix="memp-bench-llm-")
        atexit.register(shutil.rmtree, llm_home, True)
        os.environ["LLM_USER_PATH"] = llm_home
    # Byte-compile memp as an install does: with PYTHONDONTWRITEBYTECODE set (as on some CI machines), every fresh
    # process would otherwise compile memp's modules from source (~50 ms) and time that instead of memp.
    import compileall

    compileall.compile_dir(ROOT / "memp_cli", quiet=1)
    if args.search_only:
        sizes = [bench_size(int(n), args) for n in args.sizes.split(",")]
        print(json.dumps({"sizes": sizes}, indent=2))
        return
    install = memp_install()
    if install == "editable":
        print("bench: memp is an editable install here: its import hook adds ~25 ms to every fresh process; "
              "`pip install .` measures what users run", file=sys.stderr)
    help_ms = statistics.median(1000 * timed_process([*MEMP, "--help"])[0] for _ in range(5))
    with tempfile.TemporaryDirectory(prefix="memp-bench-") as tmp:
        ingest = ingest_throughput(Path(tmp), args.ingest, args.seed, args.db)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(bench_size(n, args))
        print(f"size {n}: done", file=sys.stderr, flush=True)
    result = {"memp_install": install, "help_ms": round(help_ms, 1), "ingest": ingest, "sizes": rows}
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        table(rows, ingest, help_ms, install)


if __name__ == "__main__":
    main()
