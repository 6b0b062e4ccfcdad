"""The vector index: each memory's task vector stored once (float16), its list and bit codes in a side file, the search.

Vectors are kept as float16 (768 bytes at 384 dimensions, half of float32): on MiniLM embeddings of the real tasks
in ../shared/data, the top 5 by float16 cosine are the float32 top 5 (recall@5 1.000 at 1.3k, 100k and 1M
memories, `bench/compact.py`), where int8 with a scale per vector fell to 0.988 at 100k and 0.976 at 1M. Cosines
are computed in numpy, on the vectors read by id (rescoring, similarities) or streamed (the exact scan, below
QUANTIZED_ABOVE, scan.py). Scoped searches read the scopes' active ids from idx_memories_scope_status and keep to
them: the list probe ranks only their rows, and a small scope's exact scan reads only its rows.
From QUANTIZED_ABOVE memories on, the search first looks at the rows of the lists nearest the query, memory-mapped from
the side file `<store>-bits` (bitfile.py), ranks them by the query's components against their two bit codes
(lists.Index.candidates), and rescores the best candidates with their stored vectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from .db import scope_filter
from .scan import FLOAT_TABLE, STORED_DTYPE, best, cosines
from .settings import SqliteSettings

# From this many memories on, the default search looks at the side file's lists first and rescores the best 3/4 n by
# each of its two codes (n: OVERSAMPLE × k, at least MIN_CANDIDATES) with the stored vectors; below it, an exact scan
# is as fast. bench/run.py measures both paths and recall@5 against the exact scan at each size.
QUANTIZED_ABOVE = 1_000
OVERSAMPLE = 20
MIN_CANDIDATES = 200
# n grows to at most this (1.5 n candidates rescored by id, one bound parameter each), then the exact scan settles it.
MAX_CANDIDATES = 4096
# Batch recall holds the active vectors as a float32 matrix up to this many memories (150 MB at 100k); past it,
# each query takes the list probe, which at 1M is faster than a product over 1.5 GB.
PRELOAD_LIMIT = 100_000


def encode(vectors: Any) -> list[bytes]:
    """Return the stored blob of each vector (float16)."""
    import numpy as np

    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32)).astype(STORED_DTYPE)
    return [row.tobytes() for row in matrix]


def decode(blobs: Sequence[bytes], dim: int) -> Any:
    """Return stored blobs as a float32 (rows, dim) matrix."""
    import numpy as np

    return np.frombuffer(b"".join(blobs), dtype=STORED_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def float32_blob(blob: bytes) -> bytes:
    """Return a stored vector as a float32 blob (the export format, and what sqlite-vec reads)."""
    import numpy as np

    return np.frombuffer(blob, dtype=STORED_DTYPE).astype("<f4").tobytes()


def _unit(vector: Sequence[float]) -> Any:
    import numpy as np

    q = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(q))
    return q / norm if norm else q


class SqliteVectors:
    """Task vectors in `memory_vectors` (memory id -> float16 blob); their lists and bit codes in the side file."""

    def __init__(self, conn: Any, settings: SqliteSettings, path: Path | None = None) -> None:
        self._conn = conn
        self._settings = settings
        self._path = Path(path) if path is not None else None
        self._preloaded: Any = None
        self._preloaded_scopes: Any = None  # each preloaded memory's scope, row by row
        self._scoped: dict[tuple[str, ...], Any] = {}
        self._side: Any = None
        self._ids_of: tuple[Any, Any, Any] | None = None  # (index, its ids sorted, their rows): see _kept
        self._wrote = False
        # Where the last search's time went, in ms (bench/run.py reports it): state, bit scan, top-n, rescore.
        self.timings: dict[str, float] = {}

    @property
    def side_file(self) -> Any:
        """Return the side file this store searched through (a bitfile.SideBits), None before a list probe."""
        return self._side

    # -- writing (inside a write) ---------------------------------------------------------------------------------

    def _bump(self, added: int, removed: int) -> None:
        """Count a vector write in `meta`, in the write's transaction (the side file's staleness test)."""
        self._conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + (CASE key WHEN 'vectors_generation' THEN 1 "
            "WHEN 'vectors_removals' THEN ? WHEN 'vectors_count' THEN ? END) "
            "WHERE key IN ('vectors_generation', 'vectors_removals', 'vectors_count')",
            [1 if removed else 0, added - removed],
        )
        self._wrote = True

    def add(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]], embed_model: str) -> None:
        """Store the memories' vectors (inside a write), recording which model made them."""
        if not len(memory_ids):
            return
        self._settings.claim_embed_model(embed_model, len(vectors[0]))
        self._conn.executemany(
            f"INSERT INTO {FLOAT_TABLE}(memory_id, embedding) VALUES (?, ?)", zip(memory_ids, encode(vectors))
        )
        self._bump(len(memory_ids), 0)

    def remove(self, memory_ids: Sequence[int]) -> None:
        """Delete the memories' vectors (inside a write); the side file is rebuilt at the next search."""
        if not memory_ids:
            return
        before = self._conn.total_changes
        self._conn.executemany(f"DELETE FROM {FLOAT_TABLE} WHERE memory_id = ?", [(i,) for i in memory_ids])
        removed = self._conn.total_changes - before
        if removed:
            self._bump(0, removed)

    def close(self) -> None:
        """Bring the side file up to date with what this process wrote (so the next recall need not), if it can."""
        if self._wrote and not self._conn.in_transaction and self.count() >= QUANTIZED_ABOVE:
            self._bits()

    # -- reading --------------------------------------------------------------------------------------------------

    def count(self) -> int:
        """Return how many vectors the store holds (one row of `meta`)."""
        from .bitfile import read_state

        state = read_state(self._conn)
        if state is None:
            return int(self._conn.execute(f"SELECT count(*) FROM {FLOAT_TABLE}").fetchone()[0])
        return state.count

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector, or raise NotFoundError."""
        row = self._conn.execute(f"SELECT embedding FROM {FLOAT_TABLE} WHERE memory_id = ?", [memory_id]).fetchone()
        if row is None:
            raise NotFoundError(f"memory {memory_id} has no vector")
        return [float(x) for x in decode([row[0]], len(row[0]) // 2)[0]]

    def _read(self, memory_ids: Sequence[int]) -> tuple[Any, Any]:
        """Return (ids, float32 matrix) of the stored vectors of these memories."""
        import numpy as np

        marks = ",".join("?" * len(memory_ids))
        cursor = self._conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            f"SELECT memory_id, embedding FROM {FLOAT_TABLE} WHERE memory_id IN ({marks})", list(memory_ids)
        ).fetchall()
        dim = self._dim()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, decode([r[1] for r in rows], dim) if rows else np.zeros((0, dim), dtype=np.float32)

    def _dim(self) -> int:
        embed = self._settings.embed_model()
        assert embed is not None
        return embed[1]

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the cosine between `vector` and each memory's task vector."""
        if not memory_ids or self._settings.embed_model() is None:
            return {}
        ids, matrix = self._read(memory_ids)
        sims = cosines(matrix, _unit(vector))
        return {int(i): float(s) for i, s in zip(ids, sims)}

    def _bits(self) -> Any:
        """Return the list index of every stored vector (the side file, brought up to date: lists.Index), or None."""
        from .bitfile import SideBits, read_state

        state = read_state(self._conn)
        if state is None or self._path is None:
            return None
        if self._side is None:
            self._side = SideBits(self._conn, self._path, self._dim())
        return self._side.index(state)

    def nearest(
        self, vector: Sequence[float], k: int, exact: bool | None = None, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories of `scopes` nearest to `vector`, best first.

        Large stores search the side file's lists first (unless `exact`); small ones, and small scopes, scan the stored
        vectors; preloaded vectors are searched in memory. `scopes` None searches every scope.
        """
        if self._settings.embed_model() is None or k <= 0:
            return []
        if self._preloaded is not None and exact is None:
            return self.nearest_many([vector], k, scopes)[0]
        if exact is None:
            exact = self.count() < QUANTIZED_ABOVE
        members = None
        if not exact and scopes is not None:
            # The scopes' active memories, read from the (scope, status) index: the list probe keeps to them, and
            # when they are few, scanning just their vectors is exact and as fast.
            members = self._members(scopes)
            exact = len(members) < QUANTIZED_ABOVE
        if not exact:
            found = self._bit_pass(vector, k, members)
            if found is not None:
                return found
        return self._exact(vector, k, scopes, members)

    def _members(self, scopes: Sequence[str]) -> Any:
        """Return the ids of the active memories of `scopes`, ascending."""
        import numpy as np

        scoped, params = scope_filter("scope", scopes)
        cursor = self._conn.cursor()
        cursor.row_factory = None
        cursor.execute(f"SELECT id FROM memories WHERE {scoped} AND status = 'active' ORDER BY id", params)
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def _kept(self, index: Any, members: Any) -> Any:
        """Return the boolean mask of the index's rows that are `members` (ascending ids); the rows' ids sorted are
        worked out once per index, not per scoped search."""
        import numpy as np

        if self._ids_of is None or self._ids_of[0] is not index:
            ids = index.ids()
            order = np.argsort(ids, kind="stable")
            self._ids_of = (index, ids[order], order)
        _, sorted_ids, order = self._ids_of
        keep = np.zeros(len(sorted_ids), dtype=bool)
        if len(sorted_ids):
            at = np.searchsorted(sorted_ids, members).clip(0, len(sorted_ids) - 1)
            keep[order[at[sorted_ids[at] == members]]] = True
        return keep

    def _bit_pass(self, vector: Sequence[float], k: int, members: Any) -> list[tuple[int, float]] | None:
        """Return the `k` best by the list index and rescoring (of `members` only, unless None); None when the exact
        scan must settle it."""
        import numpy as np

        t0 = time.perf_counter()
        index = self._bits()
        t1 = time.perf_counter()
        if index is None:
            return None
        keep = None if members is None else self._kept(index, members)
        rows = len(index) if keep is None else int(np.count_nonzero(keep))
        n = min(MAX_CANDIDATES, max(MIN_CANDIDATES, OVERSAMPLE * k))
        query = _unit(vector)
        while True:
            parts: dict[str, float] = {}
            positions = index.candidates(query, n, keep, parts)  # up to 1.5 n: the best 3/4 n by each code
            candidates = index.ids()[positions].tolist()
            t4 = time.perf_counter()
            found, matrix = self._read(candidates) if candidates else (np.empty(0), None)
            top = self._best_active(found, cosines(matrix, query), k) if len(found) else []
            self.timings = {"state_ms": 1000 * (t1 - t0), "bit_scan_ms": parts.get("scan_ms", 0.0),
                            "top_n_ms": parts.get("rerank_ms", 0.0), "rescore_ms": 1000 * (time.perf_counter() - t4)}
            # Held and retired memories (and, unscoped, every scope's) are among the candidates too; when they crowd
            # out the ones asked for, more candidates are looked at, and past MAX_CANDIDATES the exact scan settles it.
            if len(top) >= k or len(candidates) >= rows:
                return top
            if n >= MAX_CANDIDATES:
                return None
            n = min(MAX_CANDIDATES, 8 * n)

    def _best_active(self, ids: Any, sims: Any, k: int) -> list[tuple[int, float]]:
        """Return the `k` best (id, similarity) of the active memories among `ids`, highest first, ties by id.

        Which are active is read for the best few only, then for more while too few of them are: a status read per
        candidate was ~240 random reads, most of a cold search's time at 1M."""
        m = min(len(ids), max(2 * k, 16))
        while True:
            top = best(ids, sims, m)
            marks = ",".join("?" * len(top))
            active = {r[0] for r in self._conn.execute(
                f"SELECT id FROM memories WHERE id IN ({marks}) AND status = 'active'", [i for i, _ in top])}
            chosen = [(i, s) for i, s in top if i in active][:k]
            # Any active memory past the best m ranks below all of them: k found among them are the k best.
            if len(chosen) >= k or m >= len(ids):
                return chosen
            m = min(len(ids), 4 * m)

    def _active_rows(self, with_scope: bool = False) -> Any:
        """Return a cursor over (memory id, blob[, scope]) of the active memories' vectors."""
        cursor = self._conn.cursor()
        cursor.row_factory = None  # plain tuples: many rows are read here
        scope = ", m.scope" if with_scope else ""
        return cursor.execute(
            f"SELECT v.memory_id, v.embedding{scope} FROM {FLOAT_TABLE} v JOIN memories m ON m.id = v.memory_id "
            "WHERE m.status = 'active'"
        )

    def _exact(self, vector: Sequence[float], k: int, scopes: Sequence[str] | None = None,
               members: Any = None) -> list[tuple[int, float]]:
        """Return the exact `k` nearest active memories of `scopes` (whose ids `members` holds, when read already):
        their stored vectors streamed and compared."""
        from . import scan

        if members is None and scopes is not None:
            members = self._members(scopes)
        return scan.exact(self._conn, _unit(vector), k, self._dim(), members)

    def preload(self) -> None:
        """Make many searches in one process fast (batch recall, the MCP server): the bits mapped, small stores held.

        Up to PRELOAD_LIMIT memories, the active vectors are held as one float32 matrix and each batch of searches is
        one exact product (writes made meanwhile are not seen by it); past it, the side file is brought up to date
        and mapped, and each search takes the list probe.
        """
        import numpy as np

        embed = self._settings.embed_model()
        if embed is None:
            return
        if self.count() > PRELOAD_LIMIT:
            self._bits()
            return
        dim = embed[1]
        cursor = self._active_rows(with_scope=True)
        # Filled in place, a few thousand rows at a time: reading every row first, then joining them, held the
        # vectors three times over.
        ids = np.empty(self.count(), dtype=np.int64)
        matrix = np.empty((len(ids), dim), dtype=np.float32)
        scopes: list[str] = []
        filled = 0
        while rows := cursor.fetchmany(4096):
            if filled + len(rows) > len(ids):  # memories added since the count: make room
                ids = np.concatenate([ids, np.empty(len(rows), dtype=np.int64)])
                matrix = np.concatenate([matrix, np.empty((len(rows), dim), dtype=np.float32)])
            ids[filled : filled + len(rows)] = [r[0] for r in rows]
            matrix[filled : filled + len(rows)] = decode([r[1] for r in rows], dim)
            scopes.extend(r[2] for r in rows)
            filled += len(rows)
        self._hold(ids[:filled], matrix[:filled], scopes)

    def _hold(self, ids: Any, matrix: Any, scopes: Sequence[str]) -> None:
        """Keep preloaded vectors (made unit length, so a product is a cosine) with each one's scope."""
        import numpy as np

        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._preloaded = (ids, matrix / norms)
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
        import numpy as np

        ids, matrix = self._preloaded_in(scopes)
        if not len(ids) or not len(vectors):
            return [[] for _ in vectors]
        k = min(k, len(ids))
        queries = np.asarray([_unit(v) for v in vectors], dtype=np.float32)
        # One product for all the queries reads the vectors once; the top k is picked a row at a time, as argpartition
        # over the whole score matrix would hold as many int64 positions (50 MB for 64 queries at 100k memories).
        return [best(ids, row, k) for row in queries @ matrix.T]
