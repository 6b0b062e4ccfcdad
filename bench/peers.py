"""What a user would otherwise pick, searching the same vectors: a numpy memmap flat scan, FAISS flat, chroma.

Each peer is handed its query vectors already computed (as memp's in-process search is) and timed warm, per query,
k=5; recall@5 is measured against the same exact reference as memp. A peer that is not installed is skipped with
the reason printed. None of them is a memp dependency: install them to compare (`pip install faiss-cpu chromadb`).
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(search: Callable[[Any], list[int]], queries: Any, recall: Callable[[int, list[int]], float]) -> dict[str, Any]:
    """Return median/p95 ms and mean recall@5 of `search` over the queries (one warm-up first)."""
    search(queries[0])
    times, recalls = [], []
    for n, q in enumerate(queries):
        started = time.perf_counter()
        got = search(q)
        times.append(1000 * (time.perf_counter() - started))
        recalls.append(recall(n, got))
    ordered = sorted(times)
    return {"ms_median": round(statistics.median(times), 2), "ms_p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "recall_at_5": round(statistics.fmean(recalls), 4)}


def numpy_memmap(matrix: Any, queries: Any, recall: Callable[[int, list[int]], float]) -> dict[str, Any]:
    """Return the timings of a flat float32 scan over the memory-mapped vectors file."""
    import numpy as np

    def search(q: Any) -> list[int]:
        sims = matrix @ q
        top = np.argpartition(-sims, 4)[:5]
        return [int(i) + 1 for i in top[np.argsort(-sims[top])]]

    return _timed(search, queries, recall)


def faiss_flat(matrix: Any, queries: Any, recall: Callable[[int, list[int]], float]) -> dict[str, Any]:
    """Return the timings of FAISS's exact inner-product index (one thread), or why it was skipped."""
    try:
        faiss = importlib.import_module("faiss")  # not a dependency: looked up, not imported by name
    except ImportError:
        return {"skipped": "faiss-cpu is not installed"}
    import numpy as np

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(matrix.shape[1])
    for start in range(0, len(matrix), 100_000):
        index.add(np.ascontiguousarray(matrix[start : start + 100_000]))

    def search(q: Any) -> list[int]:
        _, ids = index.search(q[None, :].astype(np.float32), 5)
        return [int(i) + 1 for i in ids[0]]

    return _timed(search, queries, recall)


def chroma(folder: Path, matrix: Any, queries: Any, recall: Callable[[int, list[int]], float],
           limit: int) -> dict[str, Any]:
    """Return the timings of a chroma collection (HNSW, cosine) holding the vectors, or why it was skipped."""
    try:
        chromadb = importlib.import_module("chromadb")
    except ImportError:
        return {"skipped": "chromadb is not installed"}
    if len(matrix) > limit:
        return {"skipped": f"above --chroma-limit {limit:,} (its build takes too long here)"}
    client = chromadb.PersistentClient(path=str(folder / "chroma"))
    collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    started = time.perf_counter()
    step = 5000
    for start in range(0, len(matrix), step):
        rows = matrix[start : start + step]
        collection.add(ids=[str(start + i + 1) for i in range(len(rows))], embeddings=rows.tolist())
    build = time.perf_counter() - started

    def search(q: Any) -> list[int]:
        found = collection.query(query_embeddings=[q.tolist()], n_results=5)
        return [int(i) for i in found["ids"][0]]

    out = _timed(search, queries, recall)
    out["build_seconds"] = round(build, 1)
    return out


def all_peers(folder: Path, vectors_path: Path, queries: Any, recall: Callable[[int, list[int]], float],
              chroma_limit: int) -> dict[str, Any]:
    """Return every peer's figures (or skip reason), printing skips to stderr."""
    import numpy as np

    matrix = np.load(vectors_path, mmap_mode="r")
    out = {
        "numpy_memmap": numpy_memmap(matrix, queries, recall),
        "faiss_flat": faiss_flat(matrix, queries, recall),
        "chroma": chroma(folder, matrix, queries, recall, chroma_limit),
    }
    for name, figures in out.items():
        if "skipped" in figures:
            print(f"bench: {name} skipped: {figures['skipped']}", file=sys.stderr)
    return out
