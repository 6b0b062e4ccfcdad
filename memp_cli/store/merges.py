"""The merge ledger (`memory_merges`): what each merge moved into the memory it went into, so that merges go only
into active memories, never chain or cycle, are undone exactly by a restore, and `memp check` can tell credit a
merge moved from credit added twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import StoreError


def merge(conn: Any, memory_id: int, into: int, row: Any, stamp: str) -> None:
    """Move a memory's counts (`row`: recalled, succeeded, failed) into an active memory, with a ledger row.

    Inside the open write that retires the memory. Memories merged into this one before move on with it (their own
    ledger rows re-pointed), and its ledger row records only its own counts, so each row stays what one merge moved.
    """
    target = conn.execute("SELECT status FROM memories WHERE id = ?", [into]).fetchone()
    if into == memory_id or target is None or target["status"] != "active":
        state = "itself" if into == memory_id else ("missing" if target is None else target["status"])
        raise StoreError(f"cannot merge memory {memory_id} into memory {into} ({state}): only into an active one")
    absorbed = conn.execute(
        "SELECT coalesce(sum(recalled), 0), coalesce(sum(succeeded), 0), coalesce(sum(failed), 0) "
        "FROM memory_merges WHERE into_id = ?", [memory_id],
    ).fetchone()
    total = (row["recalled"], row["succeeded"], row["failed"])
    own = [t - a for t, a in zip(total, absorbed)]
    conn.execute(
        "UPDATE memories SET recalled = recalled + ?, succeeded = succeeded + ?, failed = failed + ? WHERE id = ?",
        [*total, into],
    )
    conn.execute("UPDATE memories SET recalled = ?, succeeded = ?, failed = ? WHERE id = ?", [*own, memory_id])
    conn.execute("UPDATE memory_merges SET into_id = ? WHERE into_id = ?", [into, memory_id])
    conn.execute("UPDATE memories SET merged_into = ? WHERE merged_into = ?", [into, memory_id])
    conn.execute(
        "INSERT INTO memory_merges(memory_id, into_id, recalled, succeeded, failed, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [memory_id, into, *own, stamp],
    )


def take_back(conn: Any, memory_id: int) -> None:
    """Take back from the memory it went into what a restored memory's merge moved, and drop its ledger row."""
    moved = conn.execute(
        "SELECT into_id, recalled, succeeded, failed FROM memory_merges WHERE memory_id = ?", [memory_id]
    ).fetchone()
    if moved is None:
        return
    conn.execute(
        # CASE, not max()/greatest(): one spelling both engines run.
        "UPDATE memories SET recalled = CASE WHEN recalled > ? THEN recalled - ? ELSE 0 END, "
        "succeeded = CASE WHEN succeeded > ? THEN succeeded - ? ELSE 0 END, "
        "failed = CASE WHEN failed > ? THEN failed - ? ELSE 0 END WHERE id = ?",
        [moved["recalled"], moved["recalled"], moved["succeeded"], moved["succeeded"], moved["failed"],
         moved["failed"], moved["into_id"]],
    )
    conn.execute("DELETE FROM memory_merges WHERE memory_id = ?", [memory_id])


def forget(conn: Any, purged: Sequence[int]) -> None:
    """Keep the ledger rows of purged memories without their ids (SQLite may give an id again); drop rows into them."""
    ids = [(i,) for i in purged]
    conn.executemany("UPDATE memory_merges SET memory_id = NULL WHERE memory_id = ?", ids)
    conn.executemany("DELETE FROM memory_merges WHERE into_id = ?", ids)
