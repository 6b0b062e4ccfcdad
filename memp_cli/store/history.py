"""A memory's history without copies of its text: which rows leave their texts out, and how readers fill them in.

A row that changes a memory's text (rebuilt, revised, reverted) records the old and the new script and trajectory.
The row that built the memory, and the rows that change only its status (retired, merged, restored, approved),
record neither (all four text columns NULL): the text they stand for is the memory's text at their version, which is
the `old_*` of the row after them, or the memory's own text when no row follows. Walking a memory's rows newest
first therefore fills every one in; `slim` leaves a text out only where `fill` gives it back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import NotFoundError

HISTORY_FIELDS = (
    "version", "event", "old_script", "new_script", "old_trajectory", "new_trajectory", "model", "reason", "created_at"
)
BUILT = "built"
# The events that leave a memory's text as it was (or, for `built`, make its first version): no copy needed.
TEXTLESS_EVENTS = frozenset({BUILT, "retired", "merged", "restored", "approved"})
TEXT_COLUMNS = ("old_script", "new_script", "old_trajectory", "new_trajectory")

Text = tuple[str | None, str | None]  # (script, trajectory)


def _left_out(row: Mapping[str, Any]) -> bool:
    """Return True when a row leaves its texts to be filled in (a textless event with all four columns NULL)."""
    return row["event"] in TEXTLESS_EVENTS and all(row[c] is None for c in TEXT_COLUMNS)


def stored(conn: Any, memory_id: int) -> tuple[list[dict[str, Any]], Text]:
    """Return a memory's history rows as stored (oldest first) and its current (script, trajectory).

    One statement reads both, so the rows that stand for the memory's text meet the text of the same moment.
    """
    from .runs import run_text

    rows = conn.execute(
        f"SELECT m.script, m.trajectory, t.task, t.steps, t.outcome, t.score, "
        f"{', '.join('h.' + f for f in HISTORY_FIELDS)} FROM memories m JOIN trajectories t ON t.id = m.trajectory_id "
        "LEFT JOIN memory_history h ON h.memory_id = m.id WHERE m.id = ? ORDER BY h.id", [memory_id]
    ).fetchall()
    if not rows:
        raise NotFoundError(f"no memory with id {memory_id}")
    history = [dict(zip(HISTORY_FIELDS, tuple(r)[6:])) for r in rows if r["event"] is not None]
    first = rows[0]
    return history, (first[0], run_text(first[1], first[2], first[3], first[4], first[5]))


def fill(rows: Iterable[Mapping[str, Any]], current: Text) -> list[dict[str, Any]]:
    """Return a memory's history rows (oldest first) with every text filled in; `current` is its (script, trajectory)."""
    out = [dict(r) for r in rows]
    after = current  # the memory's text just after the row being looked at
    for row in reversed(out):
        if _left_out(row):
            row["new_script"], row["new_trajectory"] = after
            row["old_script"], row["old_trajectory"] = (None, None) if row["event"] == BUILT else after
        after = row["old_script"], row["old_trajectory"]
    return out


def slim(rows: Iterable[Mapping[str, Any]], current: Text) -> list[dict[str, Any]]:
    """Return a memory's history rows (oldest first, texts in full) with the texts `fill` gives back left out."""
    out = [dict(r) for r in rows]
    after = current
    for row in reversed(out):
        before = (row["old_script"], row["old_trajectory"])
        expected = (None, None) if row["event"] == BUILT else after
        if row["event"] in TEXTLESS_EVENTS and (row["new_script"], row["new_trajectory"]) == after \
                and before == expected:
            for column in TEXT_COLUMNS:
                row[column] = None
        after = before
    return out


def text_at(rows: Iterable[Mapping[str, Any]], current: Text, version: int) -> tuple[Text, str | None] | None:
    """Return (text, model) of a memory at `version` from its history rows (oldest first), None when none has it.

    The text and model are those of the last row at that version, as they always were.
    """
    found = [r for r in fill(rows, current) if r["version"] == version]
    if not found:
        return None
    last = found[-1]
    return (last["new_script"], last["new_trajectory"]), last["model"]
