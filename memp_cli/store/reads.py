"""The reads of a store's memories: one, many, a page, attempts at tasks, history and versions, counts.

Mixed into the Memories part (memories.py holds the writes). A memory is read with its run's task and steps as
stored, so its text of the run renders when first asked for and not before (store/runs.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from ..records import Memory, Trajectory
from .db import scope_filter
from .history import fill, stored, text_at
from .runs import steps_text
from .settings import SqliteSettings
from .sql import NO_LIMIT

# Named as Memory's fields, so Memory.from_row can build one by column name.
MEMORY_COLUMNS = """
    m.id, m.trajectory_id, m.build, m.task, t.outcome, t.score AS outcome_score, m.script,
    m.trajectory AS stored_trajectory, m.tokens, m.model, m.prompt_version, m.version, m.status, m.recalled,
    m.succeeded, m.failed, m.created_at, m.last_recalled_at, m.retired_reason, m.flag, m.scope, t.source_file,
    t.source_line, t.source_id, t.metadata, t.task AS run_task, t.steps AS run_steps
"""
MEMORY_FROM = "FROM memories m JOIN trajectories t ON t.id = m.trajectory_id"


class Reads:
    """Mixed into a Memories part (which holds `_conn`, `_path` and `_settings`): everything it reads."""

    _conn: Any
    _path: Path
    _settings: SqliteSettings

    def history(self, memory_id: int) -> builtins.list[dict[str, Any]]:
        """Return every change to a memory, oldest first, each with its old and new texts."""
        return fill(*stored(self._conn, memory_id))

    def version_content(self, memory_id: int, version: int) -> tuple[str | None, str | None, str | None]:
        """Return (script, trajectory, model) of a memory as it was at `version`."""
        found = text_at(*stored(self._conn, memory_id), version)
        if found is None:
            raise NotFoundError(f"memory {memory_id} has no version {version}")
        (script, trajectory), model = found
        return script, trajectory, model


    def get_many(self, memory_ids: Sequence[int]) -> builtins.list[Memory]:
        """Return the memories with these ids that exist, in the order asked."""
        if not memory_ids:
            return []
        marks = ",".join("?" * len(memory_ids))
        rows = self._conn.execute(
            f"SELECT {MEMORY_COLUMNS} {MEMORY_FROM} WHERE m.id IN ({marks})", list(memory_ids)
        ).fetchall()
        by_id = {r["id"]: Memory.from_row(r) for r in rows}
        return [by_id[i] for i in memory_ids if i in by_id]

    def attempts(self, tasks: Sequence[str]) -> builtins.list[Memory]:
        """Return the memories whose task is one of `tasks` (compared trimmed and lower-case), oldest first."""
        keys = sorted({t.strip().lower() for t in tasks})
        found: builtins.list[Memory] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT {MEMORY_COLUMNS} {MEMORY_FROM} WHERE lower(trim(m.task)) IN ({marks}) ORDER BY m.id", chunk
            ).fetchall()
            found.extend(Memory.from_row(r) for r in rows)
        return found

    def get(self, memory_id: int) -> Memory:
        """Return one memory, or raise NotFoundError."""
        found = self.get_many([memory_id])
        if not found:
            raise NotFoundError(f"no memory with id {memory_id}")
        return found[0]

    def random_ids(self, k: int, seed: int | None = None, scopes: Sequence[str] | None = None) -> builtins.list[int]:
        """Return the ids of up to `k` active memories of `scopes` (None: every scope) drawn at random."""
        import random

        scoped, params = scope_filter("scope", scopes)
        ids = [r[0] for r in self._conn.execute(
            f"SELECT id FROM memories WHERE status = 'active' AND {scoped} ORDER BY id", params
        ).fetchall()]
        return random.Random(seed).sample(ids, min(k, len(ids)))

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """Return a stored trajectory, or raise NotFoundError."""
        row = self._conn.execute(
            "SELECT task, steps, outcome, score, source_id, metadata, source_file, source_line "
            "FROM trajectories WHERE id = ?",
            [trajectory_id],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no trajectory with id {trajectory_id}")
        return Trajectory.from_row(row)

    def scripts_to_rebuild(self, everything: bool) -> builtins.list[tuple[int, str, str]]:
        """Return (memory id, trajectory id, build) of memories whose script is offline-built, or of all scripts."""
        sql = "SELECT id, trajectory_id, build FROM memories WHERE build != 'trajectory'"
        if not everything:
            sql += " AND (model IS NULL OR model = 'offline')"
        return [(r[0], r[1], r[2]) for r in self._conn.execute(sql + " ORDER BY id").fetchall()]

    def stats(self) -> dict[str, Any]:
        """Return counts of trajectories and memories by build policy, outcome, model and status, active ones by scope."""

        def one(sql: str) -> Any:
            return self._conn.execute(sql).fetchone()[0]

        def grouped(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in self._conn.execute(sql).fetchall()}

        embed = self._settings.embed_model()
        return {
            "path": str(self._path),
            "trajectories": one("SELECT count(*) FROM trajectories"),
            "memories": one("SELECT count(*) FROM memories"),
            "by_build": grouped("SELECT build, count(*) FROM memories GROUP BY build ORDER BY build"),
            "by_outcome": grouped("SELECT outcome, count(*) FROM trajectories GROUP BY outcome ORDER BY outcome"),
            "by_model": grouped("SELECT coalesce(model, 'none'), count(*) FROM memories GROUP BY 1 ORDER BY 1"),
            "by_status": grouped("SELECT status, count(*) FROM memories GROUP BY status ORDER BY status"),
            # Every scope that holds a memory, with its count of active ones (0 when all are held or retired).
            "scopes": grouped(
                "SELECT scope, sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END) FROM memories GROUP BY scope "
                "ORDER BY scope"
            ),
            "recalls": one("SELECT count(*) FROM recalls"),
            "tokens": one("SELECT coalesce(sum(tokens), 0) FROM memories"),
            "embed_model": embed[0] if embed else None,
            "embed_dim": embed[1] if embed else None,
            "bytes": self._bytes(),
        }

    def _bytes(self) -> int:
        """Return the size of the store on disk."""
        return self._path.stat().st_size if self._path.exists() else 0

    # Inside the class body `list` names this method: the annotations here say builtins.list.
    def list(
        self, limit: int | None = None, build: str | None = None, outcome: str | None = None,
        status: str | None = None, offset: int = 0, scopes: Sequence[str] | None = None,
    ) -> builtins.list[Memory]:
        """Return memories, newest first, optionally filtered by build policy, outcome, status and scopes."""
        scoped, scope_params = scope_filter("m.scope", scopes)
        where: builtins.list[str] = [scoped]
        params: builtins.list[Any] = list(scope_params)
        for column, value in (("m.status", status), ("m.build", build), ("t.outcome", outcome)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {MEMORY_COLUMNS} {MEMORY_FROM} WHERE {' AND '.join(where)} ORDER BY m.id DESC"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params.extend([NO_LIMIT if limit is None else limit, offset])
        return [Memory.from_row(r) for r in self._conn.execute(sql, params).fetchall()]

    # Read in pages by the procedure index (procedure_index_build.py): the few columns it needs, no Memory objects.
    def active_page(self, above: int, limit: int) -> builtins.list[tuple[int, str]]:
        """Return (memory id, trajectory id) of up to `limit` active memories with ids above `above`, by id."""
        rows = self._conn.execute(
            "SELECT id, trajectory_id FROM memories WHERE status = 'active' AND id > ? ORDER BY id LIMIT ?",
            [above, limit],
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def index_rows(self, memory_ids: Sequence[int]) -> builtins.list[tuple[int, str, str, str, str, str]]:
        """Return (id, trajectory id, task, outcome, scope, steps as JSON text) of these memories, by id."""
        out: builtins.list[tuple[int, str, str, str, str, str]] = []
        for start in range(0, len(memory_ids), 500):
            chunk = list(memory_ids[start : start + 500])
            out.extend((int(r[0]), r[1], r[2], r[3], r[4], steps_text(r[5])) for r in self._conn.execute(
                "SELECT m.id, m.trajectory_id, m.task, t.outcome, m.scope, t.steps FROM memories m "
                f"JOIN trajectories t ON t.id = m.trajectory_id WHERE m.id IN ({','.join('?' * len(chunk))})", chunk,
            ).fetchall())
        return sorted(out)
