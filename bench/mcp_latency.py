"""Recall over MCP on a warm `memp mcp` server, beside the same recall in process, at several store sizes.

    python bench/mcp_latency.py [--sizes 10000,100000] [--calls 50]

Per size it builds a synthetic store with bench/run.py's helpers, starts `memp mcp` over stdio with the SDK's own
client (as an MCP host does), makes one warm-up call, then times --calls `recall` tool calls; in process it times
the same recalls through `memp_cli.recall.recall` (embedding, search and the recall log) and the vector search alone.
Numbers are printed as JSON, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from build import build_store, task
from run import pct


async def mcp_recalls(db: Path, queries: list[str]) -> list[float]:
    """Return the milliseconds of each `recall` tool call on one warm server."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "memp_cli", "mcp", "--db", str(db)],
                                   env={**os.environ, "LLM_LOAD_PLUGINS": ""})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        await client.call_tool("recall", {"task": "warm up the server", "k": 3})
        times = []
        for q in queries:
            started = time.perf_counter()
            result = await client.call_tool("recall", {"task": q, "k": 3})
            times.append(1000 * (time.perf_counter() - started))
            assert not result.is_error, result.content
        return times


def in_process(db: Path, queries: list[str]) -> dict[str, list[float]]:
    """Return the milliseconds of each in-process recall and of each vector search alone."""
    from memp_cli.embed import OnnxEmbedder
    from memp_cli.recall import recall
    from memp_cli.store import open_store

    store = open_store(db)
    recall(store, "warm up", 3)
    embedder = OnnxEmbedder()
    out: dict[str, list[float]] = {"recall": [], "search": []}
    for q in queries:
        started = time.perf_counter()
        recall(store, q, 3)
        out["recall"].append(1000 * (time.perf_counter() - started))
        vector = embedder.embed([q])[0]
        started = time.perf_counter()
        store.vectors.nearest(vector, 3)
        out["search"].append(1000 * (time.perf_counter() - started))
    store.close()
    return out


def summary(times: list[float]) -> dict[str, float]:
    """Return the median and p95 of a list of milliseconds."""
    return {"ms_median": round(statistics.median(times), 2), "ms_p95": round(pct(times, 0.95), 2)}


def main() -> None:
    import anyio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("LLM_USER_PATH", tempfile.mkdtemp(prefix="memp-bench-llm-"))
    rows: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="memp-bench-mcp-") as tmp:
            db = Path(tmp) / "memp.db"
            build_store(Path(tmp), n, args.seed)
            rng = random.Random(args.seed + 3)
            queries = [task(rng) for _ in range(args.calls)]
            over_mcp = anyio.run(mcp_recalls, db, queries)
            local = in_process(db, queries)
            rows.append({"size": n, "mcp_recall": summary(over_mcp), "in_process_recall": summary(local["recall"]),
                         "search_alone": summary(local["search"])})
            print(f"size {n}: done", file=sys.stderr, flush=True)
    print(json.dumps({"calls": args.calls, "sizes": rows}, indent=2))


if __name__ == "__main__":
    main()
