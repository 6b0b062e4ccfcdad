"""`memp check`: SQLite's own integrity checks, the counters in `meta` against the rows they count, the rows of a
store that should match and do not, and the lifecycle's invariants: merges that cycle, chain or point nowhere, tasks
that merges left without an active memory, outcomes applied twice or credited more than reported, pending outcomes
already applied, and histories whose versions and texts do not follow on from each other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .keywords import SqliteKeywords
from .settings import SqliteSettings
from .sql import dialect
from .vectors import FLOAT_TABLE


def check(conn: Any, path: Path, settings: SqliteSettings) -> dict[str, Any]:
    """Return integrity findings: SQLite's own checks, and memories, vectors and trajectories that do not match."""
    # One read transaction: every count, row and the side file's state are of one snapshot, so a write committed
    # meanwhile (a purge, an ingest) does not show as a mismatch.
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        return _check(conn, path, settings)
    finally:
        if began:
            conn.execute("COMMIT")


def _check(conn: Any, path: Path, settings: SqliteSettings) -> dict[str, Any]:
    problems: list[str] = []
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems.extend(f"integrity: {line}" for line in integrity[:10])
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        problems.append(f"{len(fk)} rows point at rows that do not exist (first in table {fk[0][0]})")
    problems.extend(SqliteKeywords(conn).counter_problems())

    def side_file_problems(conn: Any, vectors: int) -> list[str]:
        from .bitfile import vector_problems

        return vector_problems(conn, path, vectors, settings.embed_model()[1])  # type: ignore[index]

    return consistency(conn, path, settings, problems, side_file_problems)


def consistency(
    conn: Any, path: Path | str, settings: SqliteSettings, problems: list[str],
    more: Callable[[Any, int], list[str]],
) -> dict[str, Any]:
    """Return the findings of either engine: rows that should match and do not, then `more(conn, vectors)`."""

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    counts = {
        "trajectories": one("SELECT count(*) FROM trajectories"),
        "memories": one("SELECT count(*) FROM memories"),
        "vectors": one(f"SELECT count(*) FROM {FLOAT_TABLE}"),
        "history_rows": one("SELECT count(*) FROM memory_history"),
        "recalls": one("SELECT count(*) FROM recalls"),
        "outcomes": one("SELECT count(*) FROM outcomes"),
        "pending_outcomes": one("SELECT count(*) FROM outcomes WHERE applied = 0"),
        "merges": one("SELECT count(*) FROM memories WHERE merged_into IS NOT NULL"),
    }
    problems.extend(merge_problems(conn))
    problems.extend(outcome_problems(conn))
    orphans = one(
        "SELECT count(*) FROM trajectories t WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.trajectory_id = t.id)"
    )
    if orphans:
        problems.append(f"{orphans} trajectories have no memory")
    no_history = one(
        "SELECT count(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM memory_history h WHERE h.memory_id = m.id)"
    )
    if no_history:
        problems.append(f"{no_history} memories have no history")
    problems.extend(history_problems(conn))
    problems.extend(steps_problems(conn))
    if settings.embed_model() is None:
        if counts["memories"]:
            problems.append("memories exist but no embedding model is recorded")
        return {"path": str(path), "ok": not problems, "problems": problems, **counts}
    missing = one(
        f"SELECT count(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM {FLOAT_TABLE} v WHERE v.memory_id = m.id)"
    )
    stray = one(
        f"SELECT count(*) FROM {FLOAT_TABLE} v WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = v.memory_id)"
    )
    if missing:
        problems.append(f"{missing} memories have no vector")
    if stray:
        problems.append(f"{stray} vectors belong to no memory")
    dim = settings.embed_model()[1]  # type: ignore[index]
    wrong = one(f"SELECT count(*) FROM {FLOAT_TABLE} WHERE {dialect(conn).dims('embedding')} != {dim}")
    if wrong:
        problems.append(f"{wrong} vectors do not have the store's {dim} dimensions")
    problems.extend(more(conn, counts["vectors"]))
    return {"path": str(path), "ok": not problems, "problems": problems, **counts}


CYCLE = -1  # where a walk along merges that go round ends (no memory has a negative id)


def merge_problems(conn: Any) -> list[str]:
    """Return what is wrong with the merges: cycles, chains, targets missing, tasks merges left with no memory."""
    rows = conn.execute("SELECT id, status, merged_into, lower(trim(task)) FROM memories").fetchall()
    status = {int(r[0]): str(r[1]) for r in rows}
    into = {int(r[0]): int(r[2]) for r in rows if r[2] is not None}
    problems = []
    active_merged = sorted(i for i in into if status[i] == "active")
    if active_merged:
        problems.append(f"{len(active_merged)} active memories are marked merged into another (first {active_merged[0]})")
    missing = sorted(i for i, t in into.items() if t not in status)
    if missing:
        problems.append(f"{len(missing)} memories are merged into a memory that does not exist (first {missing[0]})")

    def end(memory_id: int) -> int:
        """Return where following merges from a memory ends: CYCLE when they go round, else a memory id."""
        seen = set()
        while memory_id in into:
            if memory_id in seen:
                return CYCLE
            seen.add(memory_id)
            memory_id = into[memory_id]
        return memory_id

    cycles = sorted(i for i in into if end(i) == CYCLE)
    if cycles:
        problems.append(f"{len(cycles)} memories are in a merge cycle (first {cycles[0]} -> {into[cycles[0]]})")
    chained = sorted(i for i, t in into.items() if t in into and i not in cycles)
    if chained:
        problems.append(f"{len(chained)} memories are merged into a memory that is itself merged (first "
                        f"{chained[0]} -> {into[chained[0]]} -> {into[into[chained[0]]]})")
    # A task is covered by an active memory of its own, or by the one its merged memories went into. Merged into a
    # memory that was retired by another rule, the task went with it (restorable); through a cycle or into nothing,
    # the merges lost it.
    tasks: dict[str, list[int]] = {}
    for r in rows:
        tasks.setdefault(str(r[3]), []).append(int(r[0]))
    lost = 0
    for ids in tasks.values():
        if any(status[i] == "active" for i in ids):
            continue
        ends = [end(i) for i in ids if i in into]
        if ends and all(status.get(e) != "active" for e in ends) and any(e not in status for e in ends):
            lost += 1
    if lost:
        problems.append(f"{lost} tasks have no active memory because their memories were merged away")
    return problems


def steps_problems(conn: Any) -> list[str]:
    """Return the stored runs whose steps do not read back as steps (a deflated value that does not inflate, text that
    is not UTF-8 or not JSON steps)."""
    import zlib

    from .runs import decode_steps

    bad: list[str] = []
    cursor = conn.execute("SELECT id, steps FROM trajectories")
    while rows := cursor.fetchmany(2000):
        for trajectory_id, value in rows:
            try:
                decode_steps(value)
            except (zlib.error, UnicodeDecodeError, TypeError, ValueError, KeyError, AttributeError):
                bad.append(str(trajectory_id))
    return [f"{len(bad)} trajectories have steps that do not decode (first {min(bad)})"] if bad else []


def _counted(conn: Any, sql: str, what: str, first: str) -> list[str]:
    """Return a problem line for the rows `sql` counts (it selects count and the first id), or none."""
    row = conn.execute(sql).fetchone()
    if not row[0]:
        return []
    return [f"{row[0]} {what} (first {first + ' ' if first else ''}{row[1]})"]


def outcome_problems(conn: Any) -> list[str]:
    """Return outcomes applied twice, memories credited with more than was reported, pending outcomes applied."""
    problems: list[str] = []
    problems += _counted(
        conn, "SELECT count(*), min(memory_id) FROM (SELECT memory_id FROM memory_history WHERE event = 'revised' "
        "GROUP BY memory_id, coalesce(CAST(outcome_id AS TEXT), reason) HAVING count(*) > 1)",
        "(memory, outcome) pairs were revised more than once", "memory")
    problems += _counted(
        conn, "SELECT count(DISTINCT o.id), min(o.id) FROM outcomes o JOIN memory_history h ON h.outcome_id = o.id "
        "WHERE o.applied = 0", "pending outcomes were applied already", "outcome")
    # Each memory's credit is the outcomes that name it, plus what merges moved into it.
    allowed: dict[int, list[int]] = {}
    for memory_id, outcome, n in conn.execute(
        "SELECT oi.memory_id, o.outcome, count(*) FROM outcome_items oi JOIN outcomes o ON o.id = oi.outcome_id "
        "GROUP BY 1, 2"
    ):
        allowed.setdefault(int(memory_id), [0, 0])[0 if outcome == "success" else 1] += int(n)
    moved = conn.execute(
        "SELECT into_id, sum(succeeded), sum(failed) FROM memory_merges GROUP BY into_id UNION ALL "
        # Merges the ledger does not know (memories imported from another store): the merged memory's counts.
        "SELECT s.merged_into, sum(s.succeeded), sum(s.failed) FROM memories s WHERE s.merged_into IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM memory_merges g WHERE g.memory_id = s.id) GROUP BY s.merged_into"
    ).fetchall()
    for memory_id, succeeded, failed in moved:
        credit = allowed.setdefault(int(memory_id), [0, 0])
        credit[0] += int(succeeded)
        credit[1] += int(failed)
    over = [
        int(r[0]) for r in conn.execute("SELECT id, succeeded, failed FROM memories WHERE succeeded + failed > 0")
        if r[1] > allowed.get(int(r[0]), [0, 0])[0] or r[2] > allowed.get(int(r[0]), [0, 0])[1]
    ]
    if over:
        problems.append(f"{len(over)} memories have more credit than the outcomes reported for them and the "
                        f"memories merged into them (first {over[0]})")
    return problems


# The events whose rows record a change of text, old and new (history.py): the others stand for their version's.
_REVISIONS = "('rebuilt', 'revised', 'reverted')"


def history_problems(conn: Any) -> list[str]:
    """Return memories whose history does not end where they are, and revisions that did not start from the text
    the revision before them left."""
    problems: list[str] = []
    problems += _counted(
        conn, "SELECT count(*), min(m.id) FROM memories m "
        "WHERE m.version != (SELECT max(h.version) FROM memory_history h WHERE h.memory_id = m.id)",
        "memories are not at the last version of their history", "")
    problems += _counted(
        conn, "SELECT count(*), min(m.id) FROM memories m JOIN memory_history h ON h.id = (SELECT max(x.id) FROM "
        f"memory_history x WHERE x.memory_id = m.id AND x.event IN {_REVISIONS}) "
        # A NULL trajectory is the render of the run (runs.py), which SQL cannot make: those are not compared.
        "WHERE h.new_script IS DISTINCT FROM m.script OR (m.trajectory IS NOT NULL AND "
        "h.new_trajectory IS DISTINCT FROM nullif(m.trajectory, ''))",
        "memories do not hold the text of their last revision", "")
    problems += _counted(
        conn, "SELECT count(*), min(memory_id) FROM (SELECT memory_id, old_script, old_trajectory, "
        "lag(id) OVER w AS before_id, lag(new_script) OVER w AS before_script, "
        f"lag(new_trajectory) OVER w AS before_trajectory FROM memory_history WHERE event IN {_REVISIONS} "
        "WINDOW w AS (PARTITION BY memory_id ORDER BY id)) r WHERE before_id IS NOT NULL AND "
        "(old_script IS DISTINCT FROM before_script OR old_trajectory IS DISTINCT FROM before_trajectory)",
        "revisions do not start from the text the revision before them left", "memory")
    return problems
