"""The vector index: each memory's task vector stored once (float32), its sign bits in pages, and the search.

Measured at 100k memories (see README, "The store"): a plain table read by id rescores 200 candidates in ~1 ms and
answers `similarities` in ~0.02 ms, where sqlite-vec's vec0 table took ~78 ms and ~46 ms for the same reads; vec0's
full KNN scan is about twice as fast as `vec_distance_cosine` over the plain table, which only the exact path uses,
and stores that big take the bit pass instead. So the plain table is the one float copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import NotFoundError
from .db import pack, scope_filter, unpack
from .settings import SqliteSettings

FLOAT_TABLE = "memory_vectors"
# The sign bits of the task vectors, packed in pages (see bits.py): the first pass of recall in large stores.
BIT_TABLE = "memory_bit_pages"
# From this many memories on, the default search scans the sign bits first and rescores the best OVERSAMPLE × k (at
# least MIN_CANDIDATES) with the float vectors; below it, an exact scan is as fast. bench/run.py measures both paths
# and recall@5 against the exact scan at each size.
QUANTIZED_ABOVE = 1_000
OVERSAMPLE = 20
MIN_CANDIDATES = 200
# At most this many candidates are rescored by id (one bound parameter each).
MAX_CANDIDATES = 4096


class SqliteVectors:
    """Task vectors in `memory_vectors` (memory id -> float32 blob) and their sign bits in `memory_bit_pages`."""

    def __init__(self, conn: Any, settings: SqliteSettings) -> None:
        self._conn = conn
        self._settings = settings
        self._count: int | None = None
        self._preloaded: Any = None
        self._preloaded_scopes: Any = None  # each preloaded memory's scope, row by row
        self._scoped: dict[tuple[str, ...], Any] = {}

    # -- writing (inside a write) ---------------------------------------------------------------------------------

    def add(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]], embed_model: str) -> None:
        """Store the memories' vectors (inside a write), recording which model made them."""
        if not memory_ids:
            return
        self._settings.claim_embed_model(embed_model, len(vectors[0]))
        self._conn.executemany(
            f"INSERT INTO {FLOAT_TABLE}(memory_id, embedding) VALUES (?, ?)",
            [(memory_id, pack(vector)) for memory_id, vector in zip(memory_ids, vectors)],
        )
        self._append_bits(memory_ids, vectors)
        self._count = None

    def _append_bits(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]]) -> None:
        """Add memories' sign bits to the bit pages, filling the last page first."""
        from . import bits

        row = self._conn.execute(f"SELECT page, ids, bits FROM {BIT_TABLE} ORDER BY page DESC LIMIT 1").fetchone()
        last = None
        first = 0
        if row is not None:
            first = int(row[0])
            if len(row[1]) // 8 < bits.PAGE_VECTORS:
                last = (row[1], row[2])
            else:
                first += 1
        for offset, (ids_blob, bits_blob) in enumerate(bits.append(last, memory_ids, bits.sign_bits(vectors))):
            self._conn.execute(
                f"INSERT OR REPLACE INTO {BIT_TABLE}(page, ids, bits) VALUES (?, ?, ?)",
                [first + offset, ids_blob, bits_blob],
            )

    def remove(self, memory_ids: Sequence[int]) -> None:
        """Delete the memories' vectors and take them out of the bit pages (inside a write)."""
        if not memory_ids:
            return
        from . import bits

        self._conn.executemany(f"DELETE FROM {FLOAT_TABLE} WHERE memory_id = ?", [(i,) for i in memory_ids])
        drop = set(memory_ids)
        for page, ids_blob, bits_blob in self._conn.execute(f"SELECT page, ids, bits FROM {BIT_TABLE}").fetchall():
            kept = bits.without((ids_blob, bits_blob), drop)
            if kept is None:
                self._conn.execute(f"DELETE FROM {BIT_TABLE} WHERE page = ?", [page])
            elif len(kept[0]) != len(ids_blob):
                self._conn.execute(f"UPDATE {BIT_TABLE} SET ids = ?, bits = ? WHERE page = ?", [*kept, page])
        self._count = None

    # -- reading --------------------------------------------------------------------------------------------------

    def count(self) -> int:
        """Return how many vectors the store holds (read once per open store unless it writes vectors itself)."""
        if self._count is None:
            # Summed from the bit pages' id blobs (a few dozen rows, their lengths read from the record headers):
            # count(*) over the memories walks an index of every memory, ~2.5 ms of a fresh recall at 100k.
            self._count = int(
                self._conn.execute(f"SELECT coalesce(sum(length(ids)), 0) / 8 FROM {BIT_TABLE}").fetchone()[0]
            )
        return self._count

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector, or raise NotFoundError."""
        row = self._conn.execute(f"SELECT embedding FROM {FLOAT_TABLE} WHERE memory_id = ?", [memory_id]).fetchone()
        if row is None:
            raise NotFoundError(f"memory {memory_id} has no vector")
        return unpack(row[0])

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the cosine between `vector` and each memory's task vector."""
        if not memory_ids or self._settings.embed_model() is None:
            return {}
        marks = ",".join("?" * len(memory_ids))
        rows = self._conn.execute(
            f"SELECT memory_id, vec_distance_cosine(embedding, ?) FROM {FLOAT_TABLE} WHERE memory_id IN ({marks})",
            [pack(vector), *memory_ids],
        ).fetchall()
        return {int(r[0]): 1.0 - float(r[1]) for r in rows}

    def nearest(
        self, vector: Sequence[float], k: int, exact: bool | None = None, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories of `scopes` nearest to `vector`, best first.

        Large stores search the sign bits first (unless `exact`); small ones scan the float vectors; preloaded
        vectors are searched in memory. `scopes` None searches every scope.
        """
        if self._settings.embed_model() is None or k <= 0:
            return []
        if self._preloaded is not None and exact is None:
            return self.nearest_many([vector], k, scopes)[0]
        scoped, scope_params = scope_filter("m.scope", scopes)
        total = self.count()
        if exact is None:
            exact = total < QUANTIZED_ABOVE
        blob = pack(vector)
        if not exact:
            from . import bits

            pages = self._conn.execute(f"SELECT ids, bits FROM {BIT_TABLE}").fetchall()
            candidates = bits.nearest(pages, vector, min(MAX_CANDIDATES, max(MIN_CANDIDATES, OVERSAMPLE * k)))
            marks = ",".join("?" * len(candidates))
            rows = self._conn.execute(
                f"SELECT v.memory_id, vec_distance_cosine(v.embedding, ?) AS d FROM {FLOAT_TABLE} v "
                f"JOIN memories m ON m.id = v.memory_id WHERE v.memory_id IN ({marks}) AND m.status = 'active' "
                f"AND {scoped} ORDER BY d, v.memory_id LIMIT ?",
                [blob, *candidates, *scope_params, k],
            ).fetchall()
            # Held and retired memories, and other scopes', are among the candidates too; when they crowd out the
            # ones asked for, and more memories are left than were looked at, the exact scan below settles it.
            if len(rows) >= k or len(candidates) >= total:
                return [(int(r[0]), 1.0 - float(r[1])) for r in rows]
        rows = self._conn.execute(
            f"SELECT v.memory_id, vec_distance_cosine(v.embedding, ?) AS d FROM memories m "
            f"JOIN {FLOAT_TABLE} v ON v.memory_id = m.id WHERE m.status = 'active' AND {scoped} "
            "ORDER BY d, v.memory_id LIMIT ?",
            [blob, *scope_params, k],
        ).fetchall()
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]

    def preload(self) -> None:
        """Hold the active memories' vectors in memory, for many searches in one process (batch recall).

        Reading them costs one scan (~0.1 s at 10k memories); each search is then an exact matrix product (~1 ms at
        10k), instead of a scan of the vector table per query. Writes made meanwhile are not seen by it.
        """
        import numpy as np

        embed = self._settings.embed_model()
        if embed is None:
            return
        dim = embed[1]
        cursor = self._conn.cursor()
        cursor.row_factory = None  # plain tuples: ~100k rows are read here
        cursor.execute(
            f"SELECT v.memory_id, v.embedding, m.scope FROM {FLOAT_TABLE} v JOIN memories m ON m.id = v.memory_id "
            "WHERE m.status = 'active'"
        )
        # Filled in place, a few thousand rows at a time: reading every row first, then joining them, held the
        # vectors three times over (~450 MB at 100k memories).
        ids = np.empty(self.count(), dtype=np.int64)
        matrix = np.empty((len(ids), dim), dtype=np.float32)
        filled = 0
        scopes: list[str] = []
        while rows := cursor.fetchmany(4096):
            if filled + len(rows) > len(ids):  # memories added since the count: make room
                ids = np.concatenate([ids, np.empty(len(rows), dtype=np.int64)])
                matrix = np.concatenate([matrix, np.empty((len(rows), dim), dtype=np.float32)])
            ids[filled : filled + len(rows)] = [r[0] for r in rows]
            matrix[filled : filled + len(rows)] = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
                len(rows), dim
            )
            scopes.extend(r[2] for r in rows)
            filled += len(rows)
        self._preloaded = (ids[:filled], matrix[:filled])
        self._preloaded_scopes = np.asarray(scopes, dtype=object)
        self._scoped = {}

    def _preloaded_in(self, scopes: Sequence[str] | None) -> Any:
        """Return the preloaded (ids, matrix) of the memories of `scopes`, picked once per set of scopes."""
        if scopes is None:
            return self._preloaded
        import numpy as np

        key = tuple(sorted(set(scopes)))
        if key not in self._scoped:
            ids, matrix = self._preloaded
            keep = np.isin(self._preloaded_scopes, list(key))
            self._scoped[key] = (ids[keep], matrix[keep])
        return self._scoped[key]

    def nearest_many(
        self, vectors: Sequence[Sequence[float]], k: int, scopes: Sequence[str] | None = None
    ) -> list[list[tuple[int, float]]]:
        """Return `nearest` for each vector (within `scopes`): with preloaded vectors, one product for all of them."""
        if self._preloaded is None or self._settings.embed_model() is None or k <= 0:
            return [self.nearest(vector, k, scopes=scopes) for vector in vectors]
        return top_k(self._preloaded_in(scopes), vectors, k)


def top_k(preloaded: tuple[Any, Any], vectors: Sequence[Sequence[float]], k: int) -> list[list[tuple[int, float]]]:
    """Return the `k` best (memory id, cosine) of each query among preloaded (ids, unit-vector matrix), best first."""
    import numpy as np

    ids, matrix = preloaded
    if not len(ids) or not len(vectors):
        return [[] for _ in vectors]
    k = min(k, len(ids))
    queries = np.asarray(vectors, dtype=np.float32)
    out = []
    # One product for all the queries reads the vectors once; the top k is picked a row at a time, as argpartition
    # over the whole score matrix would hold as many int64 positions (50 MB for 64 queries at 100k memories).
    for row in queries @ matrix.T:
        candidates = np.argpartition(-row, k - 1)[:k]
        best = candidates[np.argsort(-row[candidates])]
        out.append([(int(ids[i]), float(row[i])) for i in best])
    return out
