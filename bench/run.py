"""memp's speed at several store sizes, side by side with what a user would otherwise use (`llm similar`).

    python bench/run.py --sizes 1000,10000,100000 [--runs 20] [--format json] [--search-only]

Per size it builds a store of synthetic but realistic memories (tasks and steps from templates across household,
shell, coding and shopping work; tasks embedded with the default model; for sizes above --embed-limit, vectors of
the embedded tasks are mixed pairwise instead of embedding every task) and measures:

- `memp recall` as a fresh process, end to end: median and p95 of --runs runs, and its peak RSS;
- the vector search alone, in process: median and p95, and recall@5 against an exact numpy scan;
- batch recall throughput (`memp recall -`, queries per second, start-up included);
- ingest throughput with the offline distiller (trajectories per second) and store bytes per memory;
- the same search the way llm does it out of the box (`llm similar` over an llm collection of the same vectors),
  in process and as a fresh process, and memp's speed-up over it.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pg_build import settle, size_bytes, store_at

from memp_cli.embed import OnnxEmbedder
from memp_cli.records import Step, Trajectory
from memp_cli.store import NewMemory, open_store

MEMP = [sys.executable, "-m", "memp_cli"]
LLM = [sys.executable, "-m", "llm"]

HOUSE_OBJ = ["mug", "plate", "apple", "egg", "tomato", "book", "pen", "knife", "bowl", "cloth", "soapbar", "lamp"]
HOUSE_PLACE = ["countertop", "fridge", "cabinet", "drawer", "shelf", "sinkbasin", "microwave", "diningtable", "desk"]
HOUSE = ["put a clean {o} in the {p}", "heat some {o} and put it on the {p}", "cool a {o} and put it in the {p}",
         "put two {o}s in the {p}", "look at the {o} under the desk lamp", "find the {o} and put it on the {p}"]
SERVICES = ["nginx", "postgres", "redis", "apache", "docker", "sshd", "cron", "kafka", "elasticsearch", "haproxy"]
OPS = ["{s} fails to start after a config change; find the error and restart it",
       "free disk space on the {s} host without deleting data", "rotate the {s} logs and compress old ones",
       "renew the TLS certificate used by {s}", "{s} is slow; find the cause and fix it",
       "upgrade {s} to the latest patch release and verify it"]
MODULES = ["parser", "scheduler", "cli", "auth", "billing", "cache", "exporter", "api client", "migrations", "search"]
CODE = ["fix the failing test in the {m} module", "add a --verbose flag to the {m}", "fix the off-by-one error in the {m}",
        "upgrade the dependency used by the {m} and fix what breaks", "make the {m} faster", "add type hints to the {m}"]
PRODUCTS = ["usb microphone", "hair extension", "running shoes", "coffee grinder", "desk lamp", "phone case",
            "yoga mat", "water bottle", "wireless mouse", "backpack"]
SHOP = ["buy a {x} under {n} dollars", "find a {x} with good reviews, price lower than {n} dollars",
        "i need a {x} in black, under {n} dollars"]


def task(rng: random.Random) -> str:
    """Return one realistic task text."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(HOUSE).format(o=rng.choice(HOUSE_OBJ), p=rng.choice(HOUSE_PLACE))
    if kind == 1:
        return rng.choice(OPS).format(s=rng.choice(SERVICES))
    if kind == 2:
        return rng.choice(CODE).format(m=rng.choice(MODULES))
    return rng.choice(SHOP).format(x=rng.choice(PRODUCTS), n=rng.choice([10, 20, 30, 50, 100]))


def trajectory(rng: random.Random, i: int) -> Trajectory:
    """Return a trajectory of 4 to 9 steps for a generated task; unique by its number."""
    t = task(rng)
    steps = [Step(f"step {j} of run {i}: act on {t.split()[-1]}", None, f"ok {j}") for j in range(rng.randint(4, 9))]
    return Trajectory(t, steps, "success" if rng.random() < 0.7 else "failure", metadata={"n": i})


def vectors_for(tasks: list[str], limit: int, rng: random.Random) -> list[list[float]]:
    """Return unit vectors: embedded for up to `limit` distinct tasks, pairwise mixes of those past it."""
    import numpy as np

    distinct = list(dict.fromkeys(tasks))[:limit]
    base = np.asarray(OnnxEmbedder().embed(distinct), dtype=np.float32)
    index = {t: i for i, t in enumerate(distinct)}
    out = []
    for t in tasks:
        if t in index:
            v = base[index[t]] + 0.15 * base[rng.randrange(len(base))]
        else:
            v = base[rng.randrange(len(base))] + 0.3 * base[rng.randrange(len(base))]
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32).tolist()


def build_store(path: Path | str, n: int, embed_limit: int, seed: int) -> tuple[list[list[float]], float]:
    """Write `n` memories (proceduralization, offline scripts) and return their vectors and the seconds taken."""
    from memp_cli.distill import offline_script
    from memp_cli.ingest import build_memory

    rng = random.Random(seed)
    runs = [trajectory(rng, i) for i in range(n)]
    vectors = vectors_for([r.task for r in runs], embed_limit, rng)
    store = open_store(path)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        items = []
        for run, vec in zip(runs[start : start + 1000], vectors[start : start + 1000]):
            script = offline_script(run)
            text, tokens = build_memory(run, "proceduralization", script)
            items.append(NewMemory(run, "proceduralization", script, text, tokens, vec))
        store.memories.add(items, "memp-minilm")
    settle(store)
    store.close()
    return vectors, time.perf_counter() - started


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


def in_process_search(db: Path | str, vectors: list[list[float]], queries: int, seed: int) -> dict[str, Any]:
    """Return search latency and recall@5 of memp's default path and of the forced binary path."""
    import numpy as np

    store = open_store(db)
    matrix = np.asarray(vectors, dtype=np.float32)
    rng = random.Random(seed)
    picks = [matrix[rng.randrange(len(matrix))] + 0.05 * matrix[rng.randrange(len(matrix))] for _ in range(queries)]
    out: dict[str, Any] = {}
    for name, exact in (("default", None), ("binary", False), ("exact", True)):
        times, recalls = [], []
        for q in picks:
            q = (q / np.linalg.norm(q)).tolist()
            started = time.perf_counter()
            got = store.vectors.nearest(q, 5, exact=exact)
            times.append(1000 * (time.perf_counter() - started))
            # A result counts when it is as similar as the exact 5th best: ties (near-identical tasks) are not misses.
            sims = matrix @ np.asarray(q, dtype=np.float32)
            fifth = np.partition(-sims, 4)[4] * -1
            recalls.append(sum(sims[i - 1] >= fifth - 1e-5 for i, _ in got) / 5)
        out[name] = {
            "ms_median": round(statistics.median(times), 2),
            "ms_p95": round(pct(times, 0.95), 2),
            "recall_at_5": round(statistics.fmean(recalls), 4),
        }
    store.close()
    return out


def llm_baseline(tmp: Path, vectors: list[list[float]], query: str, runs: int) -> dict[str, Any]:
    """Return `llm similar` timings over an llm collection holding the same vectors."""
    import llm
    import sqlite_utils

    db_path = tmp / "llm-embeddings.db"
    db = sqlite_utils.Database(db_path)
    collection = llm.Collection("bench", db, model_id="memp-minilm")
    cid = db.execute("SELECT id FROM collections WHERE name = 'bench'").fetchone()[0]
    db.table("embeddings").insert_all(
        (
            {"collection_id": cid, "id": str(i + 1), "embedding": struct.pack(f"{len(v)}f", *v), "content": None,
             "updated": 0}
            for i, v in enumerate(vectors)
        ),
        batch_size=5000,
    )
    q = vectors[0]
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
    with tempfile.TemporaryDirectory(prefix="memp-bench-") as tmpdir, store_at(args.db, Path(tmpdir), str(n)) as db:
        tmp = Path(tmpdir)
        vectors, build_s = build_store(db, n, args.embed_limit, args.seed)
        if args.search_only:
            return {
                "size": n,
                "store_bytes_per_memory": round(size_bytes(db) / n),
                "build_seconds": round(build_s, 1),
                "search": in_process_search(db, vectors, min(100, args.runs * 5), args.seed),
            }
        rng = random.Random(args.seed + 2)
        queries = [task(rng) for _ in range(args.runs)]
        # One recall first, so the per-machine model cache exists as it does after a user's first call.
        policy = ["-p", args.policy] if args.policy else []
        timed_process([*MEMP, "recall", queries[0], "--db", str(db), "-f", "json", *policy])
        fresh, rss = [], []
        for q in queries:
            seconds, peak = timed_process([*MEMP, "recall", q, "--db", str(db), "-f", "json", *policy])
            fresh.append(1000 * seconds)
            rss.append(peak)
        batch_tasks = [task(rng) for _ in range(args.batch)]
        batch_s, _ = timed_process([*MEMP, "recall", "-", "--db", str(db), *policy],
                                   stdin="\n".join(batch_tasks) + "\n")
        search = in_process_search(db, vectors, min(100, args.runs * 5), args.seed)
        row: dict[str, Any] = {
            "size": n,
            "store_bytes_per_memory": round(size_bytes(db) / n),
            "build_seconds": round(build_s, 1),
            "recall_fresh_ms_median": round(statistics.median(fresh), 1),
            "recall_fresh_ms_p95": round(pct(fresh, 0.95), 1),
            "recall_peak_rss_mb": max(rss),
            "search": search,
            "batch_recall_qps": round(args.batch / batch_s, 1),
        }
        if not args.no_llm:
            base = llm_baseline(tmp, vectors, queries[0], args.runs)
            row["llm_similar"] = base
            row["speedup_in_process"] = round(base["in_process_ms_median"] / max(search["default"]["ms_median"], 1e-3), 1)
            row["speedup_fresh_process"] = round(base["fresh_process_ms_median"] / row["recall_fresh_ms_median"], 2)
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

    line("memp recall, fresh process ms (p50 / p95)",
         lambda r: f"{r['recall_fresh_ms_median']:.0f} / {r['recall_fresh_ms_p95']:.0f}")
    line("peak RSS of a recall, MB", lambda r: str(r["recall_peak_rss_mb"]))
    line("search in process ms (p50 / p95)",
         lambda r: f"{r['search']['default']['ms_median']:.1f} / {r['search']['default']['ms_p95']:.1f}")
    line("recall@5 vs exact", lambda r: f"{r['search']['default']['recall_at_5']:.3f}")
    line("binary + rescore: ms p50, recall@5",
         lambda r: f"{r['search']['binary']['ms_median']:.1f}, {r['search']['binary']['recall_at_5']:.3f}")
    line("exact scan ms p50", lambda r: f"{r['search']['exact']['ms_median']:.1f}")
    line("batch recall (memp recall -), q/s", lambda r: f"{r['batch_recall_qps']:.0f}")
    line("store bytes per memory", lambda r: f"{r['store_bytes_per_memory']:,}")
    if rows and "llm_similar" in rows[0]:
        line("llm similar ms, in process / fresh",
             lambda r: f"{r['llm_similar']['in_process_ms_median']:.0f} / {r['llm_similar']['fresh_process_ms_median']:.0f}")
        line("memp speed-up, in process / fresh",
             lambda r: f"{r['speedup_in_process']}x / {r['speedup_fresh_process']}x")
    Console(width=160).print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=20, help="fresh-process recalls per size")
    parser.add_argument("--batch", type=int, default=500, help="tasks in the batch recall")
    parser.add_argument("--ingest", type=int, default=1000, help="trajectories in the ingest run")
    parser.add_argument("--embed-limit", type=int, default=10000, help="embed at most this many tasks")
    parser.add_argument("--no-llm", action="store_true", help="skip the llm similar baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policy", help="recall policy of the fresh and batch recalls (default: memp's default)")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--search-only", action="store_true", help="only build the stores and time the search (JSON)")
    parser.add_argument("--db", help="a postgresql:// URL: build each store in a schema of that database (pg_build.py)")
    args = parser.parse_args()
    os.environ.setdefault("LLM_USER_PATH", tempfile.mkdtemp(prefix="memp-bench-llm-"))
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
