"""Replay logged episodes in order, as if an agent were learning online, under each update policy.

    python bench/replay.py [--data ../shared/data/react-webshop] [--policies vanilla,validation,adjustment]

For each episode: recall the top memory for its task, then report its reward (and the run) with `update`. The
episodes' actions are fixed by the log, so this measures what memory does, not what the agent would do with it:
how many memories each policy keeps, how often the recalled memory came from a successful run, how many memories
adjustment revised, and what `prune` would retire at the end. Scripts are distilled offline (no model needed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memp_cli import formats
from memp_cli.api import Memp


def replay(episodes: list, policy: str, db: Path) -> dict:
    """Return the replay's figures for one policy."""
    mem = Memp(db, model="offline")
    hits = recalled = revised = 0
    started = time.perf_counter()
    for run in episodes:
        result = mem.recall(run.task, k=1)
        if result.matches:
            recalled += 1
            hits += result.matches[0].memory.outcome == "success"
        report = mem.update(result.id, score=run.score, trajectory=run, policy=policy, success_threshold=1.0)
        revised += len(report.revised)
    seconds = time.perf_counter() - started
    stats = mem.stats()
    plan = mem.prune(dedupe=0.95)
    out = {
        "policy": policy,
        "episodes": len(episodes),
        "memories": stats["memories"],
        "memories_from_success": stats["by_outcome"].get("success", 0),
        "recalls_with_a_match": recalled,
        "top1_from_successful_run": round(hits / recalled, 3) if recalled else None,
        "revisions": revised,
        "prune_would_retire": dict(Counter(r.rule for r in plan)),
        "seconds": round(seconds, 1),
        "ms_per_episode": round(1000 * seconds / len(episodes), 1),
    }
    mem.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/react-webshop"))
    parser.add_argument("--policies", default="vanilla,validation,adjustment")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"skipped: {data} is absent")
    with formats.sources([str(data)]) as (found, _):
        episodes = [t for src in found for t in formats.read(src)][: args.limit]
    rows = []
    for policy in args.policies.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(replay(episodes, policy, Path(tmp) / "replay.db"))
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
