"""How much a compact vector form loses: recall@5 of float16 and int8 cosines, and of the bit pass, against float32.

    python bench/compact.py [--sizes 100000,1000000] [--queries 200]

The memories are MiniLM embeddings of the real tasks in ../shared/data (ALFWorld expert runs, WebShop instructions),
padded to each size with pairwise mixes of them (a task plus 0.3 of another, renormalised); the queries are real
tasks held out of the memories. A result counts when its float32 cosine is at least the exact 5th best's (less 1e-5):
ties between near-identical tasks are not misses. int8 keeps one scale per vector (its largest component -> 127).
`bits` is the store's list probe (store/lists.py: the rows of the lists nearest the query, ranked by their two bit
codes, the best 150 by each rescored in float32), for the held-out tasks and for bench/quality's paraphrases
(`bits_paraphrases`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memp_cli.embed import OnnxEmbedder

import real_tasks


def recall_at_5(exact: Any, approx: Any, queries: Any) -> float:
    """Return the mean recall@5 of the `approx` matrix's top 5 by cosine against the `exact` float32 matrix."""
    import numpy as np

    norms = np.linalg.norm(approx, axis=1)
    hits = 0
    for q in queries:
        sims = exact @ q
        fifth = -np.partition(-sims, 4)[4]
        top = np.argpartition(-(approx @ q) / norms, 4)[:5]
        hits += int(np.sum(sims[top] >= fifth - 1e-5))
    return hits / (5 * len(queries))


def bit_pass_recall(exact: Any, queries: Any, candidates: int = 200) -> float:
    """Return the mean recall@5 of the store's list probe (its `candidates` rescored exactly) against float32."""
    import numpy as np

    from memp_cli.store import lists

    # As a side file's rebuild makes it: a fit from a sample spread over the rows, every row in its list.
    step = max(1, len(exact) // (lists.SAMPLE_PER_LIST * lists.list_count(len(exact))))
    fitted = lists.fit(exact[::step], len(exact)) if len(exact) >= lists.FIT_MIN else lists.origin(exact.shape[1], 0)
    rows = lists.encode(np.arange(len(exact)), exact, fitted)
    order, offsets = lists.list_order(rows, len(fitted.centroids))
    index = lists.Index(rows[order], len(rows), offsets, fitted)
    hits = 0
    for q in queries:
        sims = exact @ q
        fifth = -np.partition(-sims, 4)[4]
        found = index.ids()[index.candidates(q, candidates)]
        top = found[np.argsort(-sims[found])[:5]]
        hits += int(np.sum(sims[top] >= fifth - 1e-5))
    return hits / (5 * len(queries))


def paraphrases() -> list[str]:
    """Return bench/quality's hand-written paraphrases of tasks."""
    lines = (ROOT / "bench" / "quality" / "paraphrases.jsonl").read_text().splitlines()
    return [json.loads(line)["task"] for line in lines if line.strip()]


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not real_tasks.available():
        raise SystemExit("bench/compact.py: ../shared/data (real trajectories) is absent")
    embedder = OnnxEmbedder()
    embedded = np.asarray(embedder.embed(real_tasks.real_tasks()), dtype=np.float32)
    para = np.asarray(embedder.embed(paraphrases()), dtype=np.float32)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(embedded))
    queries, base = embedded[order[: args.queries]], embedded[order[args.queries :]]
    rows = []
    for n in [len(base), *(int(s) for s in args.sizes.split(","))]:
        a, b = rng.integers(0, len(base), max(0, n - len(base))), rng.integers(0, len(base), max(0, n - len(base)))
        mixes = base[a] + 0.3 * base[b]
        exact = np.vstack([base, mixes / np.linalg.norm(mixes, axis=1, keepdims=True)]).astype(np.float32)
        scale = np.abs(exact).max(axis=1, keepdims=True) / 127
        int8 = np.round(exact / scale).astype(np.int8)
        rows.append({
            "memories": n,
            "float16": recall_at_5(exact, exact.astype(np.float16).astype(np.float32), queries),
            "int8": recall_at_5(exact, int8.astype(np.float32), queries),
            "bits": bit_pass_recall(exact, queries),
            "bits_paraphrases": bit_pass_recall(exact, para),
        })
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
