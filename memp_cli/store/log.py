"""The recall log (every recall and the memories it returned) and the outcomes reported for recalls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import NotFoundError, StoreError
from .base import RecallEntry
from .db import now, write

_OUTCOME_COLUMNS = ("id", "recall_id", "outcome", "score", "policy", "trajectory")


class SqliteLog:
    """The `recalls`, `recall_items`, `outcomes` and `outcome_items` tables of one SQLite store."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def record_recalls(self, recalls: Sequence[RecallEntry]) -> None:
        """Record recalls (id, task, policy, k, hits) and the memories they returned, counting uses, in one write."""
        stamp = now()
        with write(self._conn):
            self._conn.executemany(
                "INSERT INTO recalls(id, task, policy, k, created_at) VALUES (?, ?, ?, ?, ?)",
                [(recall_id, task, policy, k, stamp) for recall_id, task, policy, k, _ in recalls],
            )
            items = [
                (recall_id, memory_id, rank, score)
                for recall_id, _, _, _, hits in recalls
                for rank, (memory_id, score) in enumerate(hits, 1)
            ]
            self._conn.executemany(
                "INSERT INTO recall_items(recall_id, memory_id, rank, score) VALUES (?, ?, ?, ?)", items
            )
            self._conn.executemany(
                "UPDATE memories SET recalled = recalled + 1, last_recalled_at = ? WHERE id = ?",
                [(stamp, memory_id) for _, memory_id, _, _ in items],
            )

    def recall_memory_ids(self, recall_id: str) -> list[int]:
        """Return the memories a recall returned, in rank order, or raise NotFoundError."""
        if self._conn.execute("SELECT 1 FROM recalls WHERE id = ?", [recall_id]).fetchone() is None:
            raise NotFoundError(f"no recall with id {recall_id}")
        rows = self._conn.execute(
            "SELECT memory_id FROM recall_items WHERE recall_id = ? ORDER BY rank", [recall_id]
        ).fetchall()
        return [int(r[0]) for r in rows]

    def record_outcome(
        self, recall_id: str | None, memory_ids: Sequence[int], outcome: str, score: float | None, policy: str,
        trajectory_json: str | None, applied: bool,
    ) -> int:
        """Record an outcome and credit or blame each memory used, in one transaction; return the outcome id."""
        column = "succeeded" if outcome == "success" else "failed"
        with write(self._conn):
            if recall_id is not None and self._conn.execute(
                "SELECT 1 FROM outcomes WHERE recall_id = ?", [recall_id]
            ).fetchone():
                raise StoreError(f"the outcome of recall {recall_id} was reported already")
            cur = self._conn.execute(
                "INSERT INTO outcomes(recall_id, outcome, score, policy, trajectory, applied, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [recall_id, outcome, score, policy, trajectory_json, int(applied), now()],
            )
            outcome_id = int(cur.fetchone()[0])
            for memory_id in dict.fromkeys(memory_ids):
                self._conn.execute(
                    "INSERT INTO outcome_items(outcome_id, memory_id) VALUES (?, ?)", [outcome_id, memory_id]
                )
                self._conn.execute(f"UPDATE memories SET {column} = {column} + 1 WHERE id = ?", [memory_id])
        return outcome_id

    def pending_outcomes(self) -> list[dict[str, Any]]:
        """Return outcomes whose update policy has not been applied yet, oldest first, with the memories they credit."""
        rows = self._conn.execute(
            f"SELECT {', '.join(_OUTCOME_COLUMNS)} FROM outcomes WHERE applied = 0 ORDER BY id"
        ).fetchall()
        result = [dict(zip(_OUTCOME_COLUMNS, r)) for r in rows]
        for item in result:
            item["memory_ids"] = [
                int(r[0]) for r in self._conn.execute(
                    "SELECT memory_id FROM outcome_items WHERE outcome_id = ? ORDER BY rowid", [item["id"]]
                ).fetchall()
            ]
        return result

    def is_applied(self, outcome_id: int) -> bool:
        """Return whether an outcome's policy was carried out (by any process); a missing outcome counts as applied."""
        row = self._conn.execute("SELECT applied FROM outcomes WHERE id = ?", [outcome_id]).fetchone()
        return row is None or bool(row[0])

    def mark_applied(self, outcome_id: int) -> bool:
        """Claim an outcome: mark its update policy carried out; return False when it was marked already.

        Called inside the write that carries the policy out, it is the claim: of any number of processes applying
        one outcome, exactly one sees True, and a process killed before its commit leaves the outcome pending.
        """
        with write(self._conn):
            cur = self._conn.execute("UPDATE outcomes SET applied = 1 WHERE id = ? AND applied = 0", [outcome_id])
        return cur.rowcount == 1
