"""`memp check`: SQLite's own integrity checks, and the rows of a store that should match and do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import SqliteSettings
from .sql import dialect
from .vectors import BIT_TABLE, FLOAT_TABLE


def check(conn: Any, path: Path, settings: SqliteSettings) -> dict[str, Any]:
    """Return integrity findings: SQLite's own checks, and memories, vectors and trajectories that do not match."""
    problems: list[str] = []
    integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        problems.extend(f"integrity: {line}" for line in integrity[:10])
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        problems.append(f"{len(fk)} rows point at rows that do not exist (first in table {fk[0][0]})")
    return consistency(conn, path, settings, problems, _bit_page_problems)


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
    wrong = one(f"SELECT count(*) FROM {FLOAT_TABLE} WHERE {dialect(conn).dims('embedding')} != {dim}")
    if wrong:
        problems.append(f"{wrong} vectors do not have the store's {dim} dimensions")
    problems.extend(more(conn, counts["vectors"]))
    return {"path": str(path), "ok": not problems, "problems": problems, **counts}


def _bit_page_problems(conn: Any, vectors: int) -> list[str]:
    """Return how the sign-bit pages differ from the float vectors they are built from."""
    import numpy as np

    from . import bits

    seen: list[Any] = []
    wrong = unknown = 0
    for ids_blob, bits_blob in conn.execute(f"SELECT ids, bits FROM {BIT_TABLE} ORDER BY page").fetchall():
        ids, page_bits = bits.decode_page(ids_blob, bits_blob)
        seen.append(ids)
        marks = ",".join("?" * len(ids))
        floats = dict(
            conn.execute(f"SELECT memory_id, embedding FROM {FLOAT_TABLE} WHERE memory_id IN ({marks})", ids.tolist())
        )
        present = [i for i, memory_id in enumerate(ids.tolist()) if memory_id in floats]
        unknown += len(ids) - len(present)
        if present:
            matrix = np.frombuffer(b"".join(floats[int(ids[i])] for i in present), dtype=np.float32)
            expected = bits.sign_bits(matrix.reshape(len(present), -1))
            wrong += int((expected != page_bits.T[present]).any(axis=1).sum())
    held = np.concatenate(seen) if seen else np.empty(0, dtype=np.int64)
    problems = []
    if len(held) != vectors:
        problems.append(f"the bit pages hold {len(held)} vectors, not {vectors}")
    if len(np.unique(held)) != len(held):
        problems.append("the bit pages hold a memory more than once")
    if unknown:
        problems.append(f"the bit pages hold {unknown} memories that have no vector")
    if wrong:
        problems.append(f"{wrong} memories' sign bits in the bit pages do not match their vectors")
    return problems
