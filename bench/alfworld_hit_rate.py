"""Top-1 task-type hit rate of `query` recall on ALFWorld expert trajectories, split by task folder.

    python bench/alfworld_hit_rate.py [--data ../shared/data/alfworld-expert] [--test-share 0.2]

Trajectories of one task folder (the same task in other trials) never sit on both sides of the split.
Prints hit@1 and hit@3 for the query and random policies, and the chance level (six task types).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memp_cli import formats
from memp_cli.ingest import IngestOptions, ingest
from memp_cli.recall import recall
from memp_cli.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/alfworld-expert"))
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--max-test", type=int, default=400)
    args = parser.parse_args()
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"skipped: {data} is absent")
    files = sorted(data.rglob("gt_traj.json"))

    def is_test(f: Path) -> bool:
        digest = hashlib.sha256(f.parent.parent.name.encode()).digest()[0]
        return digest < 256 * args.test_share

    train = [f for f in files if not is_test(f)]
    test = [f for f in files if is_test(f)][: args.max_test]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        started = time.perf_counter()
        # Ingest through the same code path as `memp ingest`, file by file.
        report = ingest(store, [str(f) for f in train], IngestOptions(build="trajectory"))
        ingest_s = time.perf_counter() - started
        hits: Counter[str] = Counter()
        latencies: list[float] = []
        for f in test:
            (traj,) = formats.read(formats.Source(f, str(f)))
            want = traj.metadata["task_type"]
            for policy in ("query", "random"):
                t0 = time.perf_counter()
                got = recall(store, traj.task, k=3, policy=policy, seed=len(latencies), log=False)
                if policy == "query":
                    latencies.append(time.perf_counter() - t0)
                types = [m.memory.metadata.get("task_type") for m in got.matches]
                hits[f"{policy}@1"] += types[:1] == [want]
                hits[f"{policy}@3"] += want in types
        n = len(test)
        latencies.sort()
        result = {
            "train_trajectories": report.added,
            "test_tasks": n,
            "ingest_seconds": round(ingest_s, 1),
            "query_hit@1": round(hits["query@1"] / n, 3),
            "query_hit@3": round(hits["query@3"] / n, 3),
            "random_hit@1": round(hits["random@1"] / n, 3),
            "random_hit@3": round(hits["random@3"] / n, 3),
            "chance@1": round(1 / 6, 3),
            "recall_ms_median": round(1000 * latencies[n // 2], 2),
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
