"""Every table of a store row by row, for `memp migrate`: read in key order from any key on, written idempotently.

Rows keep their ids (memory ids, recall ids, outcome ids), so a copy answers exactly as the store it came from:
recall logs, outcomes and merges still name the same memories. The SQL is the standard SQL both engines run; the
vectors cross as float32 bytes and are written through the store's vector part (which keeps its own index).
A batch and the copy's progress are written in one transaction, so a copy killed at any point resumes where the
last batch landed; rows already there (by key) are skipped, so running a batch twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from .db import write
from .history import HISTORY_FIELDS
from .runs import pack_steps, steps_text
from .vectors import FLOAT_TABLE

# The tables in an order where every row's references are copied before it.
TABLE_NAMES = ("meta", "trajectories", "memories", "memory_history", "memory_merges", "script_cache", "recalls",
               "recall_items", "outcomes", "outcome_items", "keywords", "memory_keywords", FLOAT_TABLE)


@cache
def specs() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Return each table's (key columns, copied columns), by name."""
    # Imported here: transfer.py mixes RowCopy into its part, so it imports this module first.
    from .transfer import MEMORY_COLUMNS, TRAJECTORY_COLUMNS

    return {
        "meta": (("key",), ("key", "value")),
        "trajectories": (("id",), TRAJECTORY_COLUMNS),
        "memories": (("id",), ("id", "trajectory_id", *MEMORY_COLUMNS, "merged_into")),
        "memory_history": (("id",), ("id", "memory_id", *HISTORY_FIELDS, "outcome_id")),
        "memory_merges": (("id",), ("id", "memory_id", "into_id", "recalled", "succeeded", "failed", "created_at")),
        "script_cache": (("trajectory_id", "model", "prompt_version"),
                         ("trajectory_id", "model", "prompt_version", "script", "input_tokens", "output_tokens",
                          "created_at")),
        "recalls": (("id",), ("id", "task", "policy", "k", "created_at")),
        "recall_items": (("recall_id", "memory_id"), ("recall_id", "memory_id", "rank", "score")),
        "outcomes": (("id",), ("id", "recall_id", "outcome", "score", "policy", "trajectory", "applied",
                               "created_at")),
        # rowid orders a report's memories as they were given (SQLite's implicit one; a column on PostgreSQL).
        "outcome_items": (("rowid",), ("rowid", "outcome_id", "memory_id")),
        "keywords": (("id",), ("id", "word", "embedding")),
        "memory_keywords": (("memory_id", "keyword_id"), ("memory_id", "keyword_id")),
        FLOAT_TABLE: (("memory_id",), ("memory_id", "embedding")),
    }


# Of `meta`, the settings travel; the embedding model is claimed by the copy itself (it shapes the vector column),
# and the rest (a copy's progress, PostgreSQL's generation counter and store id) belongs to each store.
_META_COPIED = "key LIKE 'setting:%'"
PROGRESS_PREFIX = "migrate:"


class RowCopy:
    """Table rows out of and into one store (mixed into its Transfer part, which holds `_conn` and `_vectors`)."""

    _conn: Any
    _vectors: Any
    _steps_blob: bool

    def table_rows(
        self, table: str, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[tuple[Any, ...]], list[Any] | None]:
        """Return up to `limit` rows of `table` (its copied columns) whose key comes after `after`, in key order,
        and the key of the last one (None when there are none)."""
        keys, columns = specs()[table]
        where, params = ["1 = 1"], list(after or [])
        if after is not None:
            where.append(f"({', '.join(keys)}) > ({', '.join('?' * len(keys))})")
        if table == "meta":
            where.append(_META_COPIED)
        sql = (f"SELECT {', '.join(columns)} FROM {table} WHERE {' AND '.join(where)} "
               f"ORDER BY {', '.join(keys)} LIMIT ?")
        if table == FLOAT_TABLE:
            rows = self._vector_rows(sql, [*params, limit])
        else:
            rows = [tuple(r) for r in self._conn.execute(sql, [*params, limit]).fetchall()]
        if table == "trajectories":  # steps cross as JSON text, which either engine stores its own way (runs.py)
            at = columns.index("steps")
            rows = [(*r[:at], steps_text(r[at]), *r[at + 1:]) for r in rows]
        last = [rows[-1][columns.index(k)] for k in keys] if rows else None
        return rows, last

    def _vector_rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Return (memory id, float32 bytes) rows: SQLite's float16 blobs widened (exactly: every float16 is a
        float32)."""
        from .vectors import float32_blob

        return [(int(r[0]), float32_blob(r[1])) for r in self._conn.execute(sql, params).fetchall()]

    def copy_progress(self, source: str) -> dict[str, list[Any]]:
        """Return, by table, the key of the last row copied here from `source` (as recorded with the rows)."""
        rows = self._conn.execute(
            "SELECT key, value FROM meta WHERE key LIKE ?", [f"{PROGRESS_PREFIX}{source}:%"]
        ).fetchall()
        return {str(r[0]).rsplit(":", 1)[1]: json.loads(r[1]) for r in rows}

    def put_rows(
        self, table: str, rows: Sequence[Sequence[Any]], last: Sequence[Any], source: str,
        embed_model: tuple[str, int] | None,
    ) -> int:
        """Write rows of `table` (skipping keys already here) and `last`, the copy's progress, in one transaction.

        Return how many rows were new. Vectors go in as `embed_model` (model id, dimensions) made them.
        """
        if not rows:
            return 0
        _, columns = specs()[table]
        if table == "trajectories":
            at = columns.index("steps")
            rows = [(*r[:at], pack_steps(r[at], self._steps_blob), *r[at + 1:]) for r in rows]
        with write(self._conn):
            if table == FLOAT_TABLE:
                added = self._put_vectors(rows, embed_model)
            else:
                cur = self._conn.executemany(
                    f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )
                added = max(int(cur.rowcount), 0)
                self._after_rows(table)
            self._conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [f"{PROGRESS_PREFIX}{source}:{table}", json.dumps(list(last))],
            )
        return added

    def _put_vectors(self, rows: Sequence[Sequence[Any]], embed_model: tuple[str, int] | None) -> int:
        """Store the vectors of memories that have none here yet; return how many."""
        import numpy as np

        if embed_model is None:
            return 0
        ids = [int(r[0]) for r in rows]
        marks = ",".join("?" * len(ids))
        have = {int(r[0]) for r in self._conn.execute(
            f"SELECT memory_id FROM {FLOAT_TABLE} WHERE memory_id IN ({marks})", ids
        ).fetchall()}
        new = [(int(r[0]), np.frombuffer(r[1], dtype="<f4")) for r in rows if int(r[0]) not in have]
        self._vectors.add([i for i, _ in new], [v for _, v in new], embed_model[0])
        return len(new)

    def _after_rows(self, table: str) -> None:
        """Bring the store's own bookkeeping up to rows written with their ids (SQLite needs none)."""
