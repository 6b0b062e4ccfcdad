"""The exact scan: the stored float16 vectors of every active memory (or of a scope's) read and scored in chunks.

sqlite-vec has no float16 type, so cosines are computed in numpy. Each chunk of SCAN_CHUNK vectors is one row from
SQLite: the chunk's ids and its blobs concatenated by group_concat (the blobs' bytes as they are, cast back to a
blob), which reads vectors twice as fast as a Python row per vector; SCAN_THREADS threads widen and score the chunks
while SQLite reads the next (both let go of the GIL meanwhile). At 100k memories on 2 cores: 192 ms, where
vec_distance_cosine over the float32 blobs that came before took 221 ms (README, "The store").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

FLOAT_TABLE = "memory_vectors"
STORED_DTYPE = "<f2"  # little-endian IEEE float16, as vectors.py stores them
SCAN_CHUNK = 8192
SCAN_THREADS = 2


def best(ids: Any, sims: Any, k: int) -> list[tuple[int, float]]:
    """Return the `k` best (id, similarity), highest first, ties by id."""
    import numpy as np

    if len(ids) > k:
        keep = np.argpartition(-sims, k - 1)[:k]
        # Everything tied with the k-th is kept, so that ties are cut by id as SQL ordering did.
        cut = sims[keep].min()
        keep = np.flatnonzero(sims >= cut)
        ids, sims = ids[keep], sims[keep]
    order = np.lexsort((ids, -sims))[:k]
    return [(int(ids[i]), float(sims[i])) for i in order]


def cosines(matrix: Any, query: Any) -> Any:
    """Return the cosine of each row of `matrix` to the unit vector `query` (every path computes them so)."""
    import numpy as np

    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    norms[norms == 0] = 1.0
    # einsum, not a BLAS product: a row's cosine then does not depend on how many rows are scored with it, so the
    # exact scan and the rescoring of a few candidates give the same numbers.
    return np.einsum("ij,j->i", matrix, query) / norms


def chunks(conn: Any, members: Any) -> Iterator[tuple[str, bytes, Any]]:
    """Yield the active memories' vectors (only `members`' unless None) SCAN_CHUNK at a time: (ids as text, their
    blobs, ids to leave out), for `chunk_arrays`."""
    import numpy as np

    sql = (f"SELECT group_concat(memory_id), CAST(group_concat(embedding, '') AS BLOB) FROM {FLOAT_TABLE} "
           "WHERE memory_id {}")
    inactive = None
    batches: Iterable[tuple[str, list[int]]]
    if members is not None:
        # A scope's active memories, by id: a small scope of a large store reads its own rows only.
        batches = ((f"IN ({','.join('?' * len(chunk))})", chunk.tolist())
                   for chunk in (members[i : i + SCAN_CHUNK] for i in range(0, len(members), SCAN_CHUNK)))
    else:
        # Every vector by id range; the few memories that are not active, from the status index, left out.
        top = conn.execute(f"SELECT max(memory_id) FROM {FLOAT_TABLE}").fetchone()[0] or 0
        batches = (("> ? AND memory_id <= ?", [lo, lo + SCAN_CHUNK]) for lo in range(0, top, SCAN_CHUNK))
        inactive = np.fromiter(
            (r[0] for r in conn.execute("SELECT id FROM memories WHERE status < 'active' OR status > 'active'")),
            dtype=np.int64,
        )
    for where, params in batches:
        id_text, blob = conn.execute(sql.format(where), params).fetchone()
        if id_text:
            yield id_text, blob, inactive


def chunk_arrays(id_text: str, blob: bytes, inactive: Any, dim: int) -> tuple[Any, Any]:
    """Return a chunk's (ids, float32 matrix), the ids in `inactive` left out."""
    import numpy as np

    ids = np.fromstring(id_text, dtype=np.int64, sep=",")
    matrix = np.frombuffer(blob, dtype=STORED_DTYPE).reshape(len(ids), dim)
    if inactive is not None and len(inactive):
        keep = ~np.isin(ids, inactive)
        ids, matrix = ids[keep], matrix[keep]
    return ids, matrix.astype(np.float32)


def exact(conn: Any, query: Any, k: int, dim: int, members: Any = None) -> list[tuple[int, float]]:
    """Return the exact `k` nearest active memories (of `members`, unless None) to the unit vector `query`."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def score(chunk: tuple[str, bytes, Any]) -> list[tuple[int, float]]:
        ids, rows = chunk_arrays(*chunk, dim)
        return best(ids, cosines(rows, query), k)

    # At most two chunks a thread wait, so memory stays bounded.
    kept: list[tuple[int, float]] = []
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as worker:
        pending: list[Any] = []
        for chunk in chunks(conn, members):
            pending.append(worker.submit(score, chunk))
            if len(pending) > 2 * SCAN_THREADS:
                kept.extend(pending.pop(0).result())
        for job in pending:
            kept.extend(job.result())
    if not kept:
        return []
    return best(np.array([i for i, _ in kept], dtype=np.int64), np.array([s for _, s in kept], dtype=np.float32), k)
