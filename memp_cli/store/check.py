"""`memp check`: SQLite's own integrity checks, and the rows of a store that should match and do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .settings import SqliteSettings
from .vectors import FLOAT_TABLE


def check(conn: Any, path: Path, settings: SqliteSettings) -> dict[str, Any]:
    """Return integrity findings: SQLite's own checks, and memories, vectors and trajectories that do not match."""

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    problems: list[str] = []
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems.extend(f"integrity: {line}" for line in integrity[:10])
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        problems.append(f"{len(fk)} rows point at rows that do not exist (first in table {fk[0][0]})")
    counts = {
        "trajectories": one("SELECT count(*) FROM trajectories"),
        "memories": one("SELECT count(*) FROM memories"),
        "vectors": one(f"SELECT count(*) FROM {FLOAT_TABLE}"),
        "history_rows": one("SELECT count(*) FROM memory_history"),
        "recalls": one("SELECT count(*) FROM recalls"),
        "outcomes": one("SELECT count(*) FROM outcomes"),
        "pending_outcomes": one("SELECT count(*) FROM outcomes WHERE applied = 0"),
    }
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
    wrong = one(f"SELECT count(*) FROM {FLOAT_TABLE} WHERE length(embedding) != {2 * dim}")
    if wrong:
        problems.append(f"{wrong} vectors do not have the store's {dim} dimensions")
    from .bitfile import vector_problems

    problems.extend(vector_problems(conn, path, counts["vectors"], dim))
    return {"path": str(path), "ok": not problems, "problems": problems, **counts}
