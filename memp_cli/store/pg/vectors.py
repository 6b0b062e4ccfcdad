"""The task vectors in a pgvector column and their search: exact below HNSW_ABOVE memories, an HNSW index above.

Below HNSW_ABOVE vectors every search is an exact scan (a few ms at 10k). The first write that takes the store to
HNSW_ABOVE or more (the end of an ingest or an import) builds an HNSW index (vector_cosine_ops) in the same
transaction, and from then on searches walk it; `exact=True` still scans. Scores are 1 - pgvector's cosine distance,
the cosines SQLite computes from its float16 copies, to float16's precision (tests/test_pg.py holds them within 2e-3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import NotFoundError
from ..db import scope_filter
from ..settings import SqliteSettings
from ..vectors import SqliteVectors
from .db import PgConnection

TABLE = "memory_vectors"
INDEX = "idx_memory_vectors_hnsw"
# From this many vectors on, searches walk an HNSW index (built once, by the write that crosses it). Exact scans of
# 384-d vectors take ~8 ms at 10k here and grow with the store; the index answers in ~1-3 ms at any size.
HNSW_ABOVE = 10_000


class PgVectors(SqliteVectors):
    """Task vectors in `memory_vectors` (memory id -> vector(dim)); preloaded search as SQLite's."""

    def __init__(self, conn: PgConnection, settings: SqliteSettings) -> None:
        super().__init__(conn, settings)
        self._conn: PgConnection = conn
        self._indexed: bool | None = None
        self._deferred = False

    def add(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]], embed_model: str) -> None:
        """Store the memories' vectors (inside a write), building the HNSW index when the store grows past it
        (within `bulk()`, once at its end instead)."""
        if not memory_ids:
            return
        import numpy as np

        self._settings.claim_embed_model(embed_model, len(vectors[0]))
        # One pipelined statement per batch (COPY would not run inside the write's pipeline).
        self._conn.executemany(
            f"INSERT INTO {TABLE}(memory_id, embedding) VALUES (?, ?)",
            [(memory_id, np.asarray(vector, dtype=np.float32)) for memory_id, vector in zip(memory_ids, vectors)],
        )
        if not self._deferred and not self.indexed() and self.count() >= HNSW_ABOVE:
            self.build_index()

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Within the block (a bulk ingest's batches), leave the HNSW index unbuilt when the store grows past
        HNSW_ABOVE, and build it once at the end: built first, every later batch would insert into the graph one
        vector at a time. Searches meanwhile scan exactly (the same answers); a kill before the end leaves the
        index to the next write, as a store that crossed the threshold unindexed."""
        outer = self._deferred
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = outer
            if not outer and not self.indexed() and self.count() >= HNSW_ABOVE:
                with self._conn.write():
                    self.build_index()

    def indexed(self) -> bool:
        """Return True when the HNSW index exists."""
        if self._indexed is None:
            self._indexed = self._conn.execute("SELECT to_regclass(?) IS NOT NULL", [INDEX]).fetchone()[0]
        return bool(self._indexed)

    def build_index(self) -> None:
        """Build the HNSW index over the vectors (inside a write: other writers wait, readers go on)."""
        # Building it in memory is several times faster than spilling to disk; 256 MB covers ~150k 384-d vectors.
        self._conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        self._conn.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        self._indexed = True

    def remove(self, memory_ids: Sequence[int]) -> None:
        """Delete the memories' vectors (inside a write)."""
        self._conn.executemany(f"DELETE FROM {TABLE} WHERE memory_id = ?", [(i,) for i in memory_ids])

    def count(self) -> int:
        """Return how many vectors the store holds."""
        return int(self._conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector, or raise NotFoundError."""
        row = self._conn.execute(f"SELECT embedding FROM {TABLE} WHERE memory_id = ?", [memory_id], binary=True)
        found = row.fetchone()
        if found is None:
            raise NotFoundError(f"memory {memory_id} has no vector")
        return [float(x) for x in found[0].to_numpy()]

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the cosine between `vector` and each memory's task vector."""
        if not memory_ids or self._settings.embed_model() is None:
            return {}
        rows = self._conn.execute(
            f"SELECT memory_id, 1 - (embedding <=> ?) FROM {TABLE} WHERE memory_id = ANY(?)",
            [_query(vector), list(memory_ids)],
        ).fetchall()
        return {int(r[0]): float(r[1]) for r in rows}

    def nearest(
        self, vector: Sequence[float], k: int, exact: bool | None = None, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories nearest to `vector`, best first."""
        if self._settings.embed_model() is None or k <= 0:
            return []
        if self._preloaded is not None and exact is None:
            return self.nearest_many([vector], k, scopes=scopes)[0]
        scoped, params = scope_filter("m.scope", scopes)
        query = _query(vector)
        if not exact and self.indexed():
            # ORDER BY the distance alone, so the planner walks the index; ties are put in id order here.
            rows = self._conn.execute(
                f"SELECT v.memory_id, v.embedding <=> ? AS d FROM {TABLE} v JOIN memories m ON m.id = v.memory_id "
                f"WHERE m.status = 'active' AND {scoped} ORDER BY v.embedding <=> ? LIMIT ?",
                [query, *params, query, k],
            ).fetchall()
            if len(rows) >= k:
                return [(int(r[0]), 1.0 - float(r[1])) for r in sorted(rows, key=lambda r: (r[1], r[0]))]
            # Fewer than k active memories passed the filter along the graph: the exact scan settles it.
        sql = (f"SELECT v.memory_id, v.embedding <=> ? AS d FROM {TABLE} v JOIN memories m ON m.id = v.memory_id "
               f"WHERE m.status = 'active' AND {scoped} ORDER BY d, v.memory_id LIMIT ?")
        if not self.indexed():
            rows = self._conn.execute(sql, [query, *params, k]).fetchall()
        else:
            with self._conn.raw.transaction():
                # An exact scan, as asked (or as the index came back short): the planner is kept off the index for
                # this one query, and set back in case an outer write goes on.
                self._conn.execute("SET LOCAL enable_indexscan = off")
                rows = self._conn.execute(sql, [query, *params, k]).fetchall()
                self._conn.execute("SET LOCAL enable_indexscan = on")
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]

    def preload(self) -> None:
        """Hold the active memories' vectors in memory, for many searches in one process (batch recall)."""
        import numpy as np

        embed = self._settings.embed_model()
        if embed is None:
            return
        cursor = self._conn.raw.cursor(binary=True)
        cursor.execute(
            f"SELECT v.memory_id, v.embedding, m.scope FROM {TABLE} v JOIN memories m ON m.id = v.memory_id "
            "WHERE m.status = 'active' ORDER BY v.memory_id"
        )
        ids: list[int] = []
        scopes: list[str] = []
        parts: list[Any] = []
        while rows := cursor.fetchmany(4096):
            ids.extend(int(r[0]) for r in rows)
            scopes.extend(str(r[2]) for r in rows)
            parts.append(np.stack([r[1].to_numpy() for r in rows]).astype(np.float32))
        matrix = np.concatenate(parts) if parts else np.empty((0, embed[1]), dtype=np.float32)
        self._hold(np.asarray(ids, dtype=np.int64), matrix, scopes)


def _query(vector: Sequence[float]) -> Any:
    """Return a query vector as pgvector's adapter sends it (float32, bit for bit what the store holds)."""
    import numpy as np

    return np.asarray(vector, dtype=np.float32)
