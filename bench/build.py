"""Bench stores built in bounded memory: synthetic but realistic memories, their vectors streamed to disk.

The first `real_limit` memories are built the way `memp ingest` builds them (trajectories from task templates,
offline scripts, `store.memories.add` in batches of 1,000). Past that, each batch of memories is a copy of the first
ones made inside SQLite (`INSERT ... SELECT`: new trajectory ids, history and script cache rows, the full-text index
kept by its triggers) with a vector of its own, stored through `store.vectors.add`: a 1M-memory store in minutes,
where building every memory in Python took over 20 (729 memories/s). Vectors are mixes of MiniLM embeddings of the
templates' tasks; every vector is also written to a float32 `.npy` file (memory id i is row i - 1), which the exact
reference and the peers read memory-mapped. Nothing grows with the store size but the files.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memp_cli.embed import OnnxEmbedder
from memp_cli.records import Step, Trajectory
from memp_cli.store import NewMemory, open_store

from pg_build import settle

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
BATCH = 1000
CLONE_BATCH = 50_000


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


def all_tasks() -> list[str]:
    """Return every task text the templates can make, in a fixed order."""
    out = [h.format(o=o, p=p) for h in HOUSE for o in HOUSE_OBJ for p in HOUSE_PLACE]
    out += [t.format(s=s) for t in OPS for s in SERVICES] + [t.format(m=m) for t in CODE for m in MODULES]
    out += [t.format(x=x, n=n) for t in SHOP for x in PRODUCTS for n in (10, 20, 30, 50, 100)]
    return list(dict.fromkeys(out))


def trajectory(rng: random.Random, i: int) -> Trajectory:
    """Return a trajectory of 4 to 9 steps for a generated task; unique by its number."""
    t = task(rng)
    steps = [Step(f"step {j} of run {i}: act on {t.split()[-1]}", None, f"ok {j}") for j in range(rng.randint(4, 9))]
    return Trajectory(t, steps, "success" if rng.random() < 0.7 else "failure", metadata={"n": i})


@dataclass
class Built:
    """A bench store: where it is, where its vectors are (float32 .npy, row = memory id - 1), how long it took."""

    db: Path | str  # a store file, or a postgresql:// URL (its schema in $MEMP_SCHEMA: pg_build.py)
    vectors: Path
    n: int
    seconds: float
    ingest_path_per_s: float  # memories/s of the part built through `store.memories.add`
    side_file_seconds: float
    clone_path_per_s: float = 0.0  # memories/s of the part copied inside SQLite (0: none)
    peak_rss_mb: int = 0  # of the process that built it, when built by `python bench/build.py` (build_apart)


class Vectors:
    """Unit vectors for tasks: each a task's embedding mixed with a little of another's (numpy, seeded)."""

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.tasks = all_tasks()
        self.index = {t: i for i, t in enumerate(self.tasks)}
        self.base = np.asarray(OnnxEmbedder().embed(self.tasks), dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def of(self, task_rows: Any) -> Any:
        """Return a float32 (len(task_rows), dim) matrix of fresh unit vectors for these tasks (rows of `tasks`)."""
        import numpy as np

        mixed = self.base[task_rows] + 0.15 * self.base[self.rng.integers(0, len(self.base), len(task_rows))]
        return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


def _clone(store: Any, count: int, copy: int) -> int:
    """Copy memories 1..count (with their runs, history and cached scripts) as new ones; return the first new id."""
    db = store.db
    first = int(db.execute("SELECT coalesce(max(id), 0) + 1 FROM memories").fetchone()[0])
    suffix = f"-{copy}"
    db.execute(
        "INSERT INTO trajectories(id, task, steps, outcome, score, source_id, source_file, source_line, metadata, "
        "created_at) SELECT t.id || ?, t.task, t.steps, t.outcome, t.score, t.source_id, t.source_file, "
        "t.source_line, t.metadata, t.created_at FROM memories m JOIN trajectories t ON t.id = m.trajectory_id "
        "WHERE m.id <= ? ORDER BY m.id", [suffix, count],
    )
    db.execute(
        "INSERT INTO script_cache(trajectory_id, model, prompt_version, script, input_tokens, output_tokens, "
        "created_at) SELECT c.trajectory_id || ?, c.model, c.prompt_version, c.script, c.input_tokens, "
        "c.output_tokens, c.created_at FROM memories m JOIN script_cache c ON c.trajectory_id = m.trajectory_id "
        "WHERE m.id <= ?", [suffix, count],
    )
    db.execute(
        "INSERT INTO memories(id, trajectory_id, build, task, script, trajectory, tokens, model, prompt_version, "
        "created_at, updated_at, status) SELECT id + ?, trajectory_id || ?, build, task, script, trajectory, tokens, "
        "model, prompt_version, created_at, updated_at, status FROM memories WHERE id <= ? ORDER BY id",
        [first - 1, suffix, count],
    )
    db.execute(
        "INSERT INTO memory_history(memory_id, version, event, old_script, new_script, old_trajectory, "
        "new_trajectory, model, reason, created_at) SELECT memory_id + ?, version, event, old_script, new_script, "
        "old_trajectory, new_trajectory, model, reason, created_at FROM memory_history WHERE memory_id <= ?",
        [first - 1, count],
    )
    if hasattr(db, "dialect"):  # PostgreSQL numbers memories itself: move its sequence past the ids given here
        db.execute("SELECT setval(pg_get_serial_sequence('memories', 'id'), (SELECT max(id) FROM memories))")
    return first


def build_store(folder: Path, n: int, seed: int, real_limit: int = 20_000, say: Any = None,
                where: str | None = None) -> Built:
    """Write `n` memories into `folder/memp.db` (or the PostgreSQL store at `where`) in bounded memory; return where
    they are and how long it took."""
    import numpy as np

    from memp_cli.distill import offline_script
    from memp_cli.ingest import build_memory

    rng = random.Random(seed)
    vectors = Vectors(seed)
    dim = vectors.base.shape[1]
    db: Path | str = where if where is not None else folder / "memp.db"
    vec_path = folder / "vectors.npy"
    # Written a batch at a time, in id order, with plain writes: pages written through a memory map stay in the
    # builder's resident set (1.5 GB at 1M), pages written to a file go to the page cache and are the kernel's.
    matrix = vec_path.open("wb")
    np.lib.format.write_array_header_1_0(matrix, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    row_start = matrix.tell()
    store: Any = open_store(db)
    real = min(n, real_limit)
    task_of = np.empty(real, dtype=np.int64)  # the template task of each memory built in Python (bounded)
    started = time.perf_counter()
    for start in range(0, real, BATCH):
        runs = [trajectory(rng, i) for i in range(start, min(real, start + BATCH))]
        task_of[start : start + len(runs)] = [vectors.index[r.task] for r in runs]
        vecs = vectors.of(task_of[start : start + len(runs)])
        matrix.write(vecs.tobytes())
        items = []
        for run, vec in zip(runs, vecs):
            script = offline_script(run)
            text, tokens = build_memory(run, "proceduralization", script)
            items.append(NewMemory(run, "proceduralization", script, text, tokens, vec))
        store.memories.add(items, "memp-minilm")
    real_seconds = time.perf_counter() - started
    start = real
    cloning = time.perf_counter()
    while start < n:
        count = min(CLONE_BATCH, n - start, real)
        vecs = vectors.of(task_of[:count])
        with store.write():
            first = _clone(store, count, start)
            store.vectors.add(list(range(first, first + count)), vecs, "memp-minilm")
        assert matrix.tell() == row_start + (first - 1) * dim * 4, "memory ids follow the rows"
        matrix.write(vecs.tobytes())
        start += count
        if say:
            say(f"  {start:,} memories, {time.perf_counter() - started:.0f} s")
    clone_seconds = time.perf_counter() - cloning
    matrix.close()
    settle(store)
    side = time.perf_counter()
    store.close()  # brings the side file up to date, as the end of an ingest does
    done = time.perf_counter()
    return Built(db, vec_path, n, done - started, real / max(real_seconds, 1e-9), done - side,
                 (n - real) / clone_seconds if n > real else 0.0)


def build_apart(folder: Path, n: int, seed: int, real_limit: int, where: str | None = None) -> Built:
    """Return build_store's result from a process of its own, with that process's peak RSS (the bench's own process
    holds other sizes' arrays, and a child's high-water mark would start at its parent's)."""
    import json
    import subprocess
    import sys

    args = [sys.executable, __file__, str(folder), str(n), str(seed), str(real_limit), where or ""]
    # Progress goes to stderr, as the bench's own does; the result is the last line of stdout.
    out = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()[-1]
    data = json.loads(out)
    db = data.pop("db")
    return Built(Path(db) if where is None else db, Path(data.pop("vectors")), **data)


def main() -> None:
    """Build one store (`build.py FOLDER N SEED REAL_LIMIT [URL]`) and print what build_store returns, as JSON."""
    import dataclasses
    import json
    import resource
    import sys

    folder, n, seed, real, where = sys.argv[1], *map(int, sys.argv[2:5]), (sys.argv[5:6] or [""])[0]
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if n >= 100_000 else None
    built = build_store(Path(folder), n, seed, real, say, where or None)
    data = {**dataclasses.asdict(built), "db": str(built.db), "vectors": str(built.vectors)}
    data["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(data))


if __name__ == "__main__":
    main()
