"""Retirement of memories: retire (and merge), restore, approve, purge; each one write, with a history row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotFoundError
from . import merges
from .db import now, write


class Retirement:
    """Mixed into a Memories part (which holds `_conn`, `_vectors` and `_history`): memories out of recall and back."""

    _conn: Any
    _vectors: Any
    _history: Callable[..., None]

    def retire(self, memory_id: int, reason: str, merged_into: int | None = None) -> bool:
        """Keep a memory out of recall (restorable), merging its statistics into another when given.

        Return False when the memory was not active (retired or held already: nothing to do). A merge goes only into
        an active memory other than itself (else StoreError), so merges never cycle and never retire both sides;
        memories merged into this one before are merged on into `merged_into`, so merges never chain either.
        """
        stamp = now()
        with write(self._conn):
            row = self._conn.execute(
                "SELECT version, recalled, succeeded, failed, status FROM memories WHERE id = ?",
                [memory_id],
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no memory with id {memory_id}")
            if row["status"] != "active":
                return False
            if merged_into is not None:
                merges.merge(self._conn, memory_id, merged_into, row, stamp)
            self._conn.execute(
                "UPDATE memories SET status = 'retired', retired_reason = ?, retired_at = ?, merged_into = ? "
                "WHERE id = ?",
                [reason, stamp, merged_into, memory_id],
            )
            event = "merged" if merged_into is not None else "retired"
            # A change of status copies no text: the row stands for its version's (history.py).
            self._history(memory_id, row["version"], event, None, None, None, None, None, reason, stamp)
        return True

    def restore(self, memory_id: int) -> None:
        """Bring a retired memory back into recall, taking back the counts a merge gave another memory."""
        with write(self._conn):
            if self._reactivate(memory_id, "retired", "restored") is not None:
                merges.take_back(self._conn, memory_id)

    def approve(self, memory_id: int) -> str | None:
        """Let a held memory into recall; return the flag it was held for (None if it was not held)."""
        return self._reactivate(memory_id, "held", "approved")

    def _reactivate(self, memory_id: int, from_status: str, event: str) -> str | None:
        """Make a held or retired memory active again, with a history row; return why it was out of recall."""
        with write(self._conn):
            row = self._conn.execute(
                "SELECT version, status, coalesce(flag, retired_reason) AS why FROM memories "
                "WHERE id = ?",
                [memory_id],
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no memory with id {memory_id}")
            if row["status"] != from_status:
                return None
            self._conn.execute(
                "UPDATE memories SET status = 'active', flag = NULL, retired_reason = NULL, retired_at = NULL, "
                "merged_into = NULL WHERE id = ?",
                [memory_id],
            )
            reason = f"{event} (was {from_status}: {row['why']})"
            self._history(memory_id, row["version"], event, None, None, None, None, None, reason, now())
            return str(row["why"])

    def purge_retired(self) -> int:
        """Delete retired memories for good, with their vectors, keywords, history, log rows, trajectory, scripts."""
        with write(self._conn):
            rows = self._conn.execute("SELECT id, trajectory_id FROM memories WHERE status = 'retired'").fetchall()
            ids = [(r["id"],) for r in rows]
            trajectories = [(r["trajectory_id"],) for r in rows]
            self._vectors.remove([r["id"] for r in rows])
            for table in ("memory_keywords", "memory_history", "recall_items", "outcome_items"):
                self._conn.executemany(f"DELETE FROM {table} WHERE memory_id = ?", ids)
            self._conn.executemany("DELETE FROM memories WHERE id = ?", ids)
            merges.forget(self._conn, [r["id"] for r in rows])
            self._conn.executemany("DELETE FROM script_cache WHERE trajectory_id = ?", trajectories)
            self._conn.executemany("DELETE FROM trajectories WHERE id = ?", trajectories)
        return len(rows)

