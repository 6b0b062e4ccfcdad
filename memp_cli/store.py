"""The SQLite store: opening, migrating, and every query memp runs. The only module with SQL."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ModelMismatchError, NotFoundError, StoreError
from .records import Memory, Script, Trajectory

BUSY_TIMEOUT_MS = 30_000
VEC_TABLE = "memory_vec"
DB_FILENAME = "memp.db"

_MEMORY_COLUMNS = """
    m.id, m.trajectory_id, m.kind, m.task, t.outcome, t.score, m.script, m.trajectory, m.tokens, m.model,
    m.prompt_version, m.version, m.status, m.recalled, m.succeeded, m.failed, m.created_at,
    t.source_file, t.source_line, t.source_id, t.metadata
"""


def now() -> str:
    """Return the current UTC time as ISO 8601 text."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_path() -> Path:
    """Return the store path: $MEMP_DB, else memp.db in the platform's user data dir."""
    env = os.environ.get("MEMP_DB")
    if env:
        return Path(env).expanduser()
    import typer

    return Path(typer.get_app_dir("memp")) / DB_FILENAME


def _pack(vector: Sequence[float]) -> bytes:
    """Return a float32 blob as sqlite-vec reads it."""
    return struct.pack(f"{len(vector)}f", *vector)


@dataclass
class NewMemory:
    """What ingest hands the store for one trajectory: the memory built and the key vector."""

    trajectory: Trajectory
    kind: str
    script: Script | None
    trajectory_text: str | None
    tokens: int
    vector: list[float]


class Store:
    """An open memp store."""

    def __init__(self, path: Path) -> None:
        import sqlean
        import sqlite_utils
        import sqlite_vec

        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # The store holds whatever agents saw, secrets included: readable by its owner only.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlean.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
            conn.enable_load_extension(True)
            sqlite_vec.load(conn)
            conn.enable_load_extension(False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlean.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open store: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot create store: {exc.strerror}") from exc

    def _migrate(self) -> None:
        from .migrations import migrations

        if migrations.pending(self.db):
            with self.write():
                pass  # take the write lock so two processes do not migrate at once
            migrations.apply(self.db)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Run a block as one IMMEDIATE transaction: all of it lands, or none of it."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- meta -----------------------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def embed_model(self) -> tuple[str, int] | None:
        """Return the (model id, dimensions) the store's vectors were built with, if any."""
        model, dim = self._meta("embed_model"), self._meta("embed_dim")
        if model is None or dim is None:
            return None
        return model, int(dim)

    def check_embed_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise ModelMismatchError unless vectors from `model_id` (of `dim`) may go into this store."""
        current = self.embed_model()
        if current is None:
            return
        stored_model, stored_dim = current
        if stored_model != model_id or (dim is not None and dim != stored_dim):
            got = f"{model_id}" + (f" ({dim} dimensions)" if dim is not None else "")
            raise ModelMismatchError(
                f"{self.path}: store was built with embedding model {stored_model} ({stored_dim} dimensions), "
                f"not {got}; use --embed-model {stored_model} or a new --db"
            )

    def _ensure_vectors(self, model_id: str, dim: int) -> None:
        """Create the vector table on first use and record which model fills it (inside a write)."""
        self.check_embed_model(model_id, dim)
        if self.embed_model() is None:
            self.db.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {VEC_TABLE} USING vec0("
                f"memory_id INTEGER PRIMARY KEY, embedding float[{dim}] distance_metric=cosine)"
            )
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embed_model', ?)", [model_id])
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embed_dim', ?)", [str(dim)])

    # -- writing --------------------------------------------------------------------------------------------------

    def known_trajectories(self, ids: Sequence[str]) -> set[str]:
        """Return which of `ids` are stored already."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id FROM trajectories WHERE id IN ({marks})", list(ids)).fetchall()
        return {r[0] for r in rows}

    def cached_script(self, trajectory_id: str, model: str, prompt_version: str) -> Script | None:
        """Return a script distilled before from this trajectory by this model and prompt version."""
        row = self.db.execute(
            "SELECT script, input_tokens, output_tokens FROM scripts "
            "WHERE trajectory_id = ? AND model = ? AND prompt_version = ?",
            [trajectory_id, model, prompt_version],
        ).fetchone()
        if row is None:
            return None
        return Script(row[0], model, prompt_version, row[1], row[2])

    def _save_script(self, trajectory_id: str, script: Script) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO scripts(trajectory_id, model, prompt_version, script, input_tokens, "
            "output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                trajectory_id,
                script.model,
                script.prompt_version,
                script.text,
                script.input_tokens,
                script.output_tokens,
                now(),
            ],
        )

    def add_memories(self, items: Sequence[NewMemory], embed_model: str) -> dict[str, int]:
        """Store trajectories with their memories and vectors in one transaction; return trajectory id -> memory id.

        A trajectory already stored (by another process meanwhile, say) is skipped, so re-running is exactly-once.
        """
        added: dict[str, int] = {}
        if not items:
            return added
        with self.write():
            self._ensure_vectors(embed_model, len(items[0].vector))
            stamp = now()
            for item in items:
                traj = item.trajectory
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO trajectories(id, task, steps, outcome, score, source_id, source_file, "
                    "source_line, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        traj.id,
                        traj.task,
                        json.dumps([s.to_dict() for s in traj.steps], ensure_ascii=False),
                        traj.outcome,
                        traj.score,
                        traj.source_id,
                        traj.source_file,
                        traj.source_line,
                        json.dumps(traj.metadata, ensure_ascii=False),
                        stamp,
                    ],
                )
                if cur.rowcount == 0:
                    continue
                if item.script is not None:
                    self._save_script(traj.id, item.script)
                cur = self.db.execute(
                    "INSERT INTO memories(trajectory_id, kind, task, script, trajectory, tokens, model, "
                    "prompt_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        traj.id,
                        item.kind,
                        traj.task,
                        item.script.text if item.script else None,
                        item.trajectory_text,
                        item.tokens,
                        item.script.model if item.script else None,
                        item.script.prompt_version if item.script else None,
                        stamp,
                        stamp,
                    ],
                )
                memory_id = int(cur.lastrowid or 0)
                self.db.execute(
                    f"INSERT INTO {VEC_TABLE}(memory_id, embedding) VALUES (?, ?)",
                    [memory_id, _pack(item.vector)],
                )
                added[traj.id] = memory_id
        return added

    def set_script(self, memory_id: int, trajectory_id: str, script: Script, tokens: int) -> None:
        """Replace a memory's script (a rebuild), caching the new one."""
        with self.write():
            self._save_script(trajectory_id, script)
            self.db.execute(
                "UPDATE memories SET script = ?, model = ?, prompt_version = ?, tokens = ?, updated_at = ? "
                "WHERE id = ?",
                [script.text, script.model, script.prompt_version, tokens, now(), memory_id],
            )

    def log_recall(self, recall_id: str, task: str, policy: str, k: int, hits: Sequence[tuple[int, float]]) -> None:
        """Record a recall and the memories it returned, counting each as recalled."""
        stamp = now()
        with self.write():
            self.db.execute(
                "INSERT INTO recalls(id, task, policy, k, created_at) VALUES (?, ?, ?, ?, ?)",
                [recall_id, task, policy, k, stamp],
            )
            for rank, (memory_id, score) in enumerate(hits, 1):
                self.db.execute(
                    "INSERT INTO recall_items(recall_id, memory_id, rank, score) VALUES (?, ?, ?, ?)",
                    [recall_id, memory_id, rank, score],
                )
                self.db.execute(
                    "UPDATE memories SET recalled = recalled + 1, last_recalled_at = ? WHERE id = ?",
                    [stamp, memory_id],
                )

    # -- reading --------------------------------------------------------------------------------------------------

    def nearest(self, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories nearest to `vector`, best first."""
        if self.embed_model() is None or k <= 0:
            return []
        # The KNN runs alone in a CTE: sqlite-vec needs `k = ?` on the vec0 scan itself.
        rows = self.db.execute(
            f"WITH knn AS (SELECT memory_id, distance FROM {VEC_TABLE} WHERE embedding MATCH ? AND k = ?) "
            "SELECT knn.memory_id, knn.distance FROM knn JOIN memories m ON m.id = knn.memory_id "
            "WHERE m.status = 'active' ORDER BY knn.distance",
            [_pack(vector), k],
        ).fetchall()
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]

    def random_memories(self, k: int, seed: int | None = None) -> list[int]:
        """Return the ids of up to `k` active memories drawn at random."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM memories WHERE status = 'active'").fetchall()]
        import random

        return random.Random(seed).sample(ids, min(k, len(ids)))

    def _to_memory(self, row: Sequence[Any]) -> Memory:
        *head, metadata = row
        return Memory(*head, metadata=json.loads(metadata) if metadata else {})

    def get_memories(self, ids: Sequence[int]) -> list[Memory]:
        """Return the memories with these ids, in the order asked."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m JOIN trajectories t ON t.id = m.trajectory_id "
            f"WHERE m.id IN ({marks})",
            list(ids),
        ).fetchall()
        by_id = {r[0]: self._to_memory(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def get_memory(self, memory_id: int) -> Memory:
        """Return one memory or raise NotFoundError."""
        found = self.get_memories([memory_id])
        if not found:
            raise NotFoundError(f"no memory with id {memory_id}")
        return found[0]

    def list_memories(
        self, limit: int | None = None, kind: str | None = None, outcome: str | None = None
    ) -> list[Memory]:
        """Return memories, newest first, optionally filtered by kind and outcome."""
        where, params = ["1 = 1"], []
        if kind:
            where.append("m.kind = ?")
            params.append(kind)
        if outcome:
            where.append("t.outcome = ?")
            params.append(outcome)
        sql = (
            f"SELECT {_MEMORY_COLUMNS} FROM memories m JOIN trajectories t ON t.id = m.trajectory_id "
            f"WHERE {' AND '.join(where)} ORDER BY m.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._to_memory(r) for r in self.db.execute(sql, params).fetchall()]

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """Return a stored trajectory."""
        from .records import Step

        row = self.db.execute(
            "SELECT task, steps, outcome, score, source_id, metadata, source_file, source_line "
            "FROM trajectories WHERE id = ?",
            [trajectory_id],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no trajectory with id {trajectory_id}")
        steps = [Step(**s) for s in json.loads(row[1])]
        return Trajectory(row[0], steps, row[2], row[3], row[4], json.loads(row[5] or "{}"), row[6], row[7])

    def scripts_to_rebuild(self, everything: bool) -> list[tuple[int, str, str]]:
        """Return (memory id, trajectory id, kind) of memories whose script is offline-built, or of all with scripts."""
        sql = "SELECT id, trajectory_id, kind FROM memories WHERE kind != 'trajectory'"
        if not everything:
            sql += " AND (model IS NULL OR model = 'offline')"
        return [(r[0], r[1], r[2]) for r in self.db.execute(sql + " ORDER BY id").fetchall()]

    def stats(self) -> dict[str, Any]:
        """Return counts of trajectories and memories by kind, outcome, model and status."""

        def grouped(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in self.db.execute(sql).fetchall()}

        embed = self.embed_model()
        return {
            "path": str(self.path),
            "trajectories": self.db.execute("SELECT count(*) FROM trajectories").fetchone()[0],
            "memories": self.db.execute("SELECT count(*) FROM memories").fetchone()[0],
            "by_kind": grouped("SELECT kind, count(*) FROM memories GROUP BY kind ORDER BY kind"),
            "by_outcome": grouped("SELECT outcome, count(*) FROM trajectories GROUP BY outcome ORDER BY outcome"),
            "by_model": grouped(
                "SELECT coalesce(model, 'none'), count(*) FROM memories GROUP BY 1 ORDER BY 1"
            ),
            "by_status": grouped("SELECT status, count(*) FROM memories GROUP BY status ORDER BY status"),
            "recalls": self.db.execute("SELECT count(*) FROM recalls").fetchone()[0],
            "tokens": self.db.execute("SELECT coalesce(sum(tokens), 0) FROM memories").fetchone()[0],
            "embed_model": embed[0] if embed else None,
            "embed_dim": embed[1] if embed else None,
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
        }


def open_store(path: Path | None = None) -> Store:
    """Return the store at `path` (or the default), creating and migrating it as needed."""
    return Store(path or default_path())
