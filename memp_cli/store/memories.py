"""Trajectories and the memories built from them: writes (exactly once), versions, script cache.

The reads are in reads.py and retirement in retirement.py, both mixed in; how a run is stored once is runs.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConflictError, NotFoundError
from ..records import Script, Trajectory
from .base import NewMemory
from .db import now, write
from .history import BUILT
from .reads import Reads
from .retirement import Retirement
from .runs import compact_json, decode_steps, encode_steps, run_text, stored_text
from .settings import SqliteSettings
from .vectors import SqliteVectors


class SqliteMemories(Reads, Retirement):
    """The `trajectories`, `memories`, `script_cache` and `memory_history` tables of one SQLite store."""

    _steps_blob = True  # steps stored deflated where smaller (runs.py); PostgreSQL keeps the JSON text

    def __init__(self, conn: Any, path: Path, vectors: SqliteVectors, settings: SqliteSettings) -> None:
        self._conn = conn
        self._path = path
        self._vectors = vectors
        self._settings = settings

    # -- writing --------------------------------------------------------------------------------------------------

    def known(self, trajectory_ids: Sequence[str]) -> set[str]:
        """Return which of the trajectory ids are stored already."""
        if not trajectory_ids:
            return set()
        marks = ",".join("?" * len(trajectory_ids))
        rows = self._conn.execute(f"SELECT id FROM trajectories WHERE id IN ({marks})", list(trajectory_ids))
        return {r[0] for r in rows}

    def scopes_of(self, trajectory_ids: Sequence[str]) -> dict[str, str]:
        """Return trajectory id -> the scope of its memory, for those of the ids stored already."""
        found: dict[str, str] = {}
        for start in range(0, len(trajectory_ids), 500):
            chunk = list(trajectory_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT trajectory_id, scope FROM memories WHERE trajectory_id IN ({marks})", chunk
            )
            found.update((str(r[0]), str(r[1])) for r in rows)
        return found

    def cached_script(self, trajectory_id: str, model: str, prompt_version: str) -> Script | None:
        """Return a script distilled before from this trajectory by this model and prompt version."""
        row = self._conn.execute(
            "SELECT script, input_tokens, output_tokens FROM script_cache "
            "WHERE trajectory_id = ? AND model = ? AND prompt_version = ?",
            [trajectory_id, model, prompt_version],
        ).fetchone()
        if row is None:
            return None
        return Script(row["script"], model, prompt_version, row["input_tokens"], row["output_tokens"])

    def _cache_script(self, trajectory_id: str, script: Script) -> None:
        """Keep a model's script for this trajectory, so a rebuild or a re-run does not pay for it again.

        The offline distiller's scripts are not kept: made again from the stored run, they come out the same, in
        less time than a lookup saves (a cached copy was ~600 bytes a memory, an eighth of the store).
        """
        from ..distill import OFFLINE_MODEL

        if script.model == OFFLINE_MODEL:
            return
        self._conn.execute(
            "INSERT INTO script_cache(trajectory_id, model, prompt_version, script, input_tokens, "
            "output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [trajectory_id, script.model, script.prompt_version, script.text, script.input_tokens,
             script.output_tokens, now()],
        )

    def add(self, items: Sequence[NewMemory], embed_model: str) -> dict[str, int]:
        """Store trajectories with their memories and vectors in one transaction; return trajectory id -> memory id.

        A trajectory already stored (by another process meanwhile, say) is skipped, so re-running is exactly-once.
        """
        added: dict[str, int] = {}
        if not items:
            return added
        vectors: list[list[float]] = []
        with write(self._conn):
            # Checked before anything is written, so a store of another model stays as it was.
            self._settings.check_embed_model(embed_model, len(items[0].vector))
            stamp = now()
            for item in items:
                traj = item.trajectory
                cur = self._conn.execute(
                    "INSERT INTO trajectories(id, task, steps, outcome, score, source_id, source_file, "
                    "source_line, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [
                        traj.id, traj.task, encode_steps(traj.steps, self._steps_blob),
                        traj.outcome, traj.score, traj.source_id, traj.source_file, traj.source_line,
                        compact_json(traj.metadata), stamp,
                    ],
                )
                if cur.rowcount == 0:
                    continue
                script = item.script
                if script is not None:
                    self._cache_script(traj.id, script)
                cur = self._conn.execute(
                    "INSERT INTO memories(trajectory_id, build, task, script, trajectory, tokens, model, "
                    "prompt_version, created_at, updated_at, status, flag, scope) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [
                        traj.id, item.build, traj.task, script.text if script else None,
                        stored_text(item.trajectory_text, traj),
                        item.tokens, script.model if script else None, script.prompt_version if script else None,
                        stamp, stamp, "held" if item.flag else "active", item.flag, item.scope,
                    ],
                )
                memory_id = int(cur.fetchone()[0])
                vectors.append(item.vector)
                # The texts of version 1 are the memory's own until a revision records them as its old ones
                # (history.py): the row does not copy them.
                self._history(
                    memory_id, 1, BUILT, None, None, None, None, script.model if script else None, "ingested", stamp
                )
                added[traj.id] = memory_id
            self._vectors.add(list(added.values()), vectors, embed_model)
        return added

    def set_script(
        self, memory_id: int, trajectory_id: str, script: Script, tokens: int, flag: str | None = None,
        expected_version: int | None = None,
    ) -> bool:
        """Replace a memory's script (a rebuild) as a new version, caching the new one; a `flag` holds it.

        A rebuild that gives the script the memory holds already adds no version (rebuilding twice is one rebuild),
        and neither does one that lost a race: when another process cached a script of this trajectory by this model
        and prompt version first, it wrote that script in the same transaction, and this one is not written over it.
        With `expected_version`, a memory at another version (revised from an outcome while the model was asked) keeps
        its revision: a rebuild from the run alone would drop what the failure taught. Return False when refused so
        (or when another process's script won the race), True when the memory holds this script now.
        """
        with write(self._conn):
            cached = self.cached_script(trajectory_id, script.model, script.prompt_version)
            if cached is not None and cached.text != script.text:
                return False
            self._cache_script(trajectory_id, script)
            row = self._conn.execute("SELECT script, version FROM memories WHERE id = ?", [memory_id]).fetchone()
            if row is not None and row["script"] == script.text:
                return True
            if row is not None and expected_version is not None and row["version"] != expected_version:
                return False
            self._revise(memory_id, script.text, None, script.model, script.prompt_version, tokens, "rebuilt",
                         f"script rebuilt with {script.model}", keep_trajectory=True, flag=flag)
            return True

    def finish_script(
        self, memory_id: int, trajectory_id: str, pending: str | None, script: Script, tokens: int,
        flag: str | None = None,
    ) -> None:
        """Put a model's script in place of the offline one an ingest stored while waiting for it (`pending`).

        Still as ingested (version 1, script `pending`), the memory is rewritten in place, as if built so; changed
        meanwhile, it gets the script as a new version (a rebuild). A `flag` holds it.
        """
        with write(self._conn):
            self._cache_script(trajectory_id, script)
            cur = self._conn.execute(
                "UPDATE memories SET script = ?, model = ?, prompt_version = ?, tokens = ?, updated_at = ?, "
                "status = CASE WHEN CAST(? AS TEXT) IS NULL THEN status ELSE 'held' END, flag = coalesce(?, flag) "
                "WHERE id = ? AND version = 1 AND script IS NOT DISTINCT FROM ?",
                [script.text, script.model, script.prompt_version, tokens, now(), flag, flag, memory_id, pending],
            )
            if cur.rowcount:
                # Still at version 1, whose rows stand for the memory's own text (history.py): they copy none.
                self._conn.execute(
                    "UPDATE memory_history SET old_script = NULL, new_script = NULL, old_trajectory = NULL, "
                    "new_trajectory = NULL, model = ? WHERE memory_id = ? AND version = 1",
                    [script.model, memory_id],
                )
                return
            self._revise(memory_id, script.text, None, script.model, script.prompt_version, tokens, "rebuilt",
                         f"script rebuilt with {script.model}", keep_trajectory=True, flag=flag)

    # -- history and revision -------------------------------------------------------------------------------------

    def _history(
        self, memory_id: int, version: int, event: str, old_script: str | None, old_trajectory: str | None,
        new_script: str | None, new_trajectory: str | None, model: str | None, reason: str, stamp: str,
        outcome_id: int | None = None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO memory_history(memory_id, version, event, old_script, new_script, old_trajectory, "
            "new_trajectory, model, reason, created_at, outcome_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [memory_id, version, event, old_script, new_script, old_trajectory, new_trajectory, model, reason, stamp,
             outcome_id],
        )

    def _revise(
        self, memory_id: int, script: str | None, trajectory: str | None, model: str | None,
        prompt_version: str | None, tokens: int, event: str, reason: str, keep_trajectory: bool = False,
        flag: str | None = None, expected_version: int | None = None, outcome_id: int | None = None,
    ) -> int:
        """Write a new version of a memory inside an open write; return the version number.

        With `expected_version`, refuse (ConflictError) when the memory is at another version: the revision was made
        from a text another process has changed since. With `outcome_id`, a memory revised for that outcome already
        is left as it is (its version returned): one revision per (memory, outcome).
        """
        row = self._conn.execute(
            "SELECT m.version, m.script, m.trajectory, t.task, t.steps, t.outcome, t.score FROM memories m "
            "JOIN trajectories t ON t.id = m.trajectory_id WHERE m.id = ?", [memory_id]
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no memory with id {memory_id}")
        if outcome_id is not None:
            done = self._conn.execute(
                "SELECT version FROM memory_history WHERE memory_id = ? AND outcome_id = ?", [memory_id, outcome_id]
            ).fetchone()
            if done is not None:
                return int(done[0])
        if expected_version is not None and int(row["version"]) != expected_version:
            raise ConflictError(
                f"memory {memory_id} is at v{row['version']}, not v{expected_version}: another process changed it"
            )
        version, old_script = int(row["version"]) + 1, row["script"]
        # History rows hold the texts themselves; the memory holds its text of the run as runs.py stores it.
        old_trajectory = run_text(row["trajectory"], row["task"], row["steps"], row["outcome"], row["score"])
        if keep_trajectory:
            trajectory, kept = old_trajectory, row["trajectory"]
        else:
            run = Trajectory(task=row["task"], steps=decode_steps(row["steps"]) if trajectory else [],
                             outcome=row["outcome"], score=row["score"])
            kept = stored_text(trajectory, run)
        stamp = now()
        self._conn.execute(
            "UPDATE memories SET script = ?, trajectory = ?, model = ?, prompt_version = ?, tokens = ?, version = ?, "
            "updated_at = ? WHERE id = ?",
            [script, kept, model, prompt_version, tokens, version, stamp, memory_id],
        )
        if flag:
            self._conn.execute("UPDATE memories SET status = 'held', flag = ? WHERE id = ?", [flag, memory_id])
        self._history(memory_id, version, event, old_script, old_trajectory, script, trajectory, model, reason, stamp,
                      outcome_id)
        return version

    def revise(
        self, memory_id: int, script: str | None, trajectory: str | None, model: str | None,
        prompt_version: str | None, tokens: int, event: str, reason: str, flag: str | None = None,
        expected_version: int | None = None, outcome_id: int | None = None,
    ) -> int:
        """Store a new version of a memory (the old one stays in its history); return the version number.

        A `flag` holds the memory back from recall until approved. `expected_version` makes it a compare-and-set
        (ConflictError when the memory moved on); `outcome_id` makes it once per (memory, outcome).
        """
        with write(self._conn):
            return self._revise(memory_id, script, trajectory, model, prompt_version, tokens, event, reason,
                                flag=flag, expected_version=expected_version, outcome_id=outcome_id)
