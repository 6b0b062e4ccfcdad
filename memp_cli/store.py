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

from .errors import ModelMismatchError, NotFoundError, StoreError, sqlite_message
from .records import Memory, Script, Trajectory

BUSY_TIMEOUT_MS = 30_000
VEC_TABLE = "memory_vec"
# The sign bits of the task vectors, packed in pages (see bits.py): the first pass of recall in large stores.
BIT_TABLE = "memory_bit_pages"
# The same vectors in a plain table, for reads by id (rescoring, similarities): vec0 point lookups are slow.
PLAIN_TABLE = "memory_vectors"
# From this many memories on, recall scans the sign bits first and rescores the best OVERSAMPLE × k (at least
# MIN_CANDIDATES) with the full vectors from the plain table: see bench/run.py for the times and recall@5 against
# the exact scan at each size.
QUANTIZED_ABOVE = 5_000
OVERSAMPLE = 20
MIN_CANDIDATES = 200
# sqlite-vec answers at most this many neighbours per KNN query.
MAX_KNN = 4096
DB_FILENAME = "memp.db"

_MEMORY_COLUMNS = """
    m.id, m.trajectory_id, m.kind, m.task, t.outcome, t.score, m.script, m.trajectory, m.tokens, m.model,
    m.prompt_version, m.version, m.status, m.recalled, m.succeeded, m.failed, m.created_at, m.last_recalled_at,
    m.retired_reason, m.flag, t.source_file, t.source_line, t.source_id, t.metadata
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


def _vec_extension() -> str:
    """Return the path of sqlite-vec's loadable extension, without importing its Python module (which loads numpy)."""
    import importlib.util

    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("sqlite-vec is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "vec0")


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
    flag: str | None = None


class Store:
    """An open memp store."""

    def __init__(self, path: Path) -> None:
        import sqlean

        self.path = path
        self._embed: tuple[str, int] | None = None
        self._vectors: int | None = None
        self._preloaded: Any = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # The store holds whatever agents saw, secrets included: readable by its owner only.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlean.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
            conn.enable_load_extension(True)
            conn.load_extension(_vec_extension())
            conn.enable_load_extension(False)
            # Queries run on the plain connection; sqlite-utils is loaded only to migrate (it costs 0.1 s to import).
            self.db = conn
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL still survives any crash of memp consistently; it skips the fsync on every commit
            # (the last commits may be lost only if the machine itself loses power).
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlean.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open store: {sqlite_message(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot create store: {exc.strerror}") from exc

    def _applied_migrations(self) -> set[str]:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "_sqlite_migrations" not in tables:
            return set()
        rows = self.db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'memp'").fetchall()
        return {r[0] for r in rows}

    def _migrate(self) -> None:
        """Bring the schema up to date under the write lock, refusing stores that are not memp's or are newer."""
        from .migrations import NAMES, migration_set

        applied = self._applied_migrations()
        newer = applied - set(NAMES)
        if newer:
            raise StoreError(
                f"{self.path}: written by a newer memp (schema change {sorted(newer)[-1]}); upgrade memp to open it"
            )
        if applied >= set(NAMES):
            return
        others = [
            r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not r[0].startswith(("_sqlite", "sqlite_"))
        ]
        if not applied and others:
            raise StoreError(f"{self.path}: not a memp store (it holds other tables: {', '.join(others[:3])})")
        import sqlite_utils

        # One process migrates; the others wait on the lock, then find nothing pending. Each migration runs in a
        # savepoint inside this transaction, so a failure leaves no migration half-applied.
        with self.write():
            migration_set().apply(sqlite_utils.Database(self.db))

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Run a block as one IMMEDIATE transaction: all of it lands, or none of it."""
        conn = self.db
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
        if self._embed is None:
            model, dim = self._meta("embed_model"), self._meta("embed_dim")
            if model is None or dim is None:
                return None
            self._embed = (model, int(dim))  # set once per store, never changed: safe to keep
        return self._embed

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
        vectors: list[list[float]] = []
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
                    "prompt_version, created_at, updated_at, status, flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        "held" if item.flag else "active",
                        item.flag,
                    ],
                )
                memory_id = int(cur.lastrowid or 0)
                blob = _pack(item.vector)
                self.db.execute(f"INSERT INTO {VEC_TABLE}(memory_id, embedding) VALUES (?, ?)", [memory_id, blob])
                self.db.execute(f"INSERT INTO {PLAIN_TABLE}(memory_id, embedding) VALUES (?, ?)", [memory_id, blob])
                vectors.append(item.vector)
                self._history(
                    memory_id, 1, "built", None, None, item.script.text if item.script else None,
                    item.trajectory_text, item.script.model if item.script else None, "ingested", stamp,
                )
                added[traj.id] = memory_id
            if added:
                self._append_bits(list(added.values()), vectors)
        return added

    def _append_bits(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]]) -> None:
        """Add memories' sign bits to the bit pages, filling the last page first (inside a write)."""
        from . import bits

        row = self.db.execute(f"SELECT page, ids, bits FROM {BIT_TABLE} ORDER BY page DESC LIMIT 1").fetchone()
        last = None
        first = 0
        if row is not None:
            first = int(row[0])
            if len(row[1]) // 8 < bits.PAGE_VECTORS:
                last = (row[1], row[2])
            else:
                first += 1
        for offset, (ids_blob, bits_blob) in enumerate(bits.append(last, memory_ids, bits.sign_bits(vectors))):
            self.db.execute(
                f"INSERT OR REPLACE INTO {BIT_TABLE}(page, ids, bits) VALUES (?, ?, ?)",
                [first + offset, ids_blob, bits_blob],
            )

    def _drop_bits(self, memory_ids: set[int]) -> None:
        """Take memories out of the bit pages (inside a write)."""
        from . import bits

        for page, ids_blob, bits_blob in self.db.execute(f"SELECT page, ids, bits FROM {BIT_TABLE}").fetchall():
            kept = bits.without((ids_blob, bits_blob), memory_ids)
            if kept is None:
                self.db.execute(f"DELETE FROM {BIT_TABLE} WHERE page = ?", [page])
            elif len(kept[0]) != len(ids_blob):
                self.db.execute(f"UPDATE {BIT_TABLE} SET ids = ?, bits = ? WHERE page = ?", [*kept, page])

    def set_script(
        self, memory_id: int, trajectory_id: str, script: Script, tokens: int, flag: str | None = None
    ) -> None:
        """Replace a memory's script (a rebuild) as a new version, caching the new one; a `flag` holds it."""
        with self.write():
            self._save_script(trajectory_id, script)
            self._revise(memory_id, script.text, None, script.model, script.prompt_version, tokens, "rebuilt",
                         f"script rebuilt with {script.model}", keep_trajectory=True, flag=flag)

    # -- history and revision -------------------------------------------------------------------------------------

    def _history(
        self, memory_id: int, version: int, event: str, old_script: str | None, old_trajectory: str | None,
        new_script: str | None, new_trajectory: str | None, model: str | None, reason: str, stamp: str,
    ) -> None:
        self.db.execute(
            "INSERT INTO memory_history(memory_id, version, event, old_script, new_script, old_trajectory, "
            "new_trajectory, model, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [memory_id, version, event, old_script, new_script, old_trajectory, new_trajectory, model, reason, stamp],
        )

    def _revise(
        self, memory_id: int, script: str | None, trajectory: str | None, model: str | None,
        prompt_version: str | None, tokens: int, event: str, reason: str, keep_trajectory: bool = False,
        flag: str | None = None,
    ) -> int:
        """Write a new version of a memory inside an open write; return the version number."""
        row = self.db.execute(
            "SELECT version, script, trajectory FROM memories WHERE id = ?", [memory_id]
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no memory with id {memory_id}")
        version, old_script, old_trajectory = int(row[0]) + 1, row[1], row[2]
        if keep_trajectory:
            trajectory = old_trajectory
        stamp = now()
        self.db.execute(
            "UPDATE memories SET script = ?, trajectory = ?, model = ?, prompt_version = ?, tokens = ?, version = ?, "
            "updated_at = ? WHERE id = ?",
            [script, trajectory, model, prompt_version, tokens, version, stamp, memory_id],
        )
        if flag:
            self.db.execute("UPDATE memories SET status = 'held', flag = ? WHERE id = ?", [flag, memory_id])
        self._history(memory_id, version, event, old_script, old_trajectory, script, trajectory, model, reason, stamp)
        return version

    def revise(
        self, memory_id: int, script: str | None, trajectory: str | None, model: str | None,
        prompt_version: str | None, tokens: int, event: str, reason: str, flag: str | None = None,
    ) -> int:
        """Store a new version of a memory (the old one stays in its history); return the version number.

        A `flag` holds the memory back from recall until approved.
        """
        with self.write():
            return self._revise(memory_id, script, trajectory, model, prompt_version, tokens, event, reason,
                                flag=flag)

    def approve(self, memory_id: int) -> str | None:
        """Let a held memory into recall; return the flag it was held for (None if it was not held)."""
        return self._reactivate(memory_id, "held", "approved")

    def history(self, memory_id: int) -> list[dict[str, Any]]:
        """Return every change to a memory, oldest first."""
        self.get_memory(memory_id)
        cols = ["version", "event", "old_script", "new_script", "old_trajectory", "new_trajectory", "model", "reason",
                "created_at"]
        rows = self.db.execute(
            f"SELECT {', '.join(cols)} FROM memory_history WHERE memory_id = ? ORDER BY id", [memory_id]
        ).fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def version_content(self, memory_id: int, version: int) -> tuple[str | None, str | None, str | None]:
        """Return (script, trajectory, model) of a memory as it was at `version`."""
        row = self.db.execute(
            "SELECT new_script, new_trajectory, model FROM memory_history WHERE memory_id = ? AND version = ? "
            "ORDER BY id DESC LIMIT 1",
            [memory_id, version],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"memory {memory_id} has no version {version}")
        return row[0], row[1], row[2]

    # -- outcomes -------------------------------------------------------------------------------------------------

    def recall_memory_ids(self, recall_id: str) -> list[int]:
        """Return the memories a recall returned, in rank order."""
        if self.db.execute("SELECT 1 FROM recalls WHERE id = ?", [recall_id]).fetchone() is None:
            raise NotFoundError(f"no recall with id {recall_id}")
        rows = self.db.execute(
            "SELECT memory_id FROM recall_items WHERE recall_id = ? ORDER BY rank", [recall_id]
        ).fetchall()
        return [int(r[0]) for r in rows]

    def record_outcome(
        self, recall_id: str | None, memory_ids: Sequence[int], outcome: str, score: float | None, policy: str,
        trajectory_json: str | None, applied: bool,
    ) -> int:
        """Record an outcome and credit or blame each memory used, in one transaction; return the outcome id."""
        column = "succeeded" if outcome == "success" else "failed"
        with self.write():
            if recall_id is not None and self.db.execute(
                "SELECT 1 FROM outcomes WHERE recall_id = ?", [recall_id]
            ).fetchone():
                raise StoreError(f"the outcome of recall {recall_id} was reported already")
            cur = self.db.execute(
                "INSERT INTO outcomes(recall_id, outcome, score, policy, trajectory, applied, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [recall_id, outcome, score, policy, trajectory_json, int(applied), now()],
            )
            outcome_id = int(cur.lastrowid or 0)
            for memory_id in dict.fromkeys(memory_ids):
                self.db.execute("INSERT INTO outcome_items(outcome_id, memory_id) VALUES (?, ?)",
                                [outcome_id, memory_id])
                self.db.execute(f"UPDATE memories SET {column} = {column} + 1 WHERE id = ?", [memory_id])
        return outcome_id

    def pending_outcomes(self) -> list[dict[str, Any]]:
        """Return outcomes whose update policy has not been applied yet, oldest first."""
        cols = ["id", "recall_id", "outcome", "score", "policy", "trajectory"]
        rows = self.db.execute(
            f"SELECT {', '.join(cols)} FROM outcomes WHERE applied = 0 ORDER BY id"
        ).fetchall()
        result = [dict(zip(cols, r)) for r in rows]
        for item in result:
            item["memory_ids"] = [
                int(r[0]) for r in self.db.execute(
                    "SELECT memory_id FROM outcome_items WHERE outcome_id = ? ORDER BY rowid", [item["id"]]
                ).fetchall()
            ]
        return result

    def mark_applied(self, outcome_id: int) -> None:
        """Mark an outcome's update policy as carried out."""
        with self.write():
            self.db.execute("UPDATE outcomes SET applied = 1 WHERE id = ?", [outcome_id])

    # -- settings -------------------------------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """Return a store setting."""
        return self._meta(f"setting:{key}")

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        with self.write():
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [f"setting:{key}", value])

    # -- retirement -----------------------------------------------------------------------------------------------

    def retire(self, memory_id: int, reason: str, merged_into: int | None = None) -> None:
        """Keep a memory out of recall (restorable), merging its statistics into another when given."""
        stamp = now()
        with self.write():
            row = self.db.execute(
                "SELECT version, script, trajectory, recalled, succeeded, failed, status FROM memories WHERE id = ?",
                [memory_id],
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no memory with id {memory_id}")
            if row[6] != "active":
                return
            if merged_into is not None:
                self.db.execute(
                    "UPDATE memories SET recalled = recalled + ?, succeeded = succeeded + ?, failed = failed + ? "
                    "WHERE id = ?",
                    [row[3], row[4], row[5], merged_into],
                )
            self.db.execute(
                "UPDATE memories SET status = 'retired', retired_reason = ?, retired_at = ?, merged_into = ? "
                "WHERE id = ?",
                [reason, stamp, merged_into, memory_id],
            )
            event = "merged" if merged_into is not None else "retired"
            self._history(memory_id, row[0], event, row[1], row[2], row[1], row[2], None, reason, stamp)

    def restore(self, memory_id: int) -> None:
        """Bring a retired memory back into recall."""
        self._reactivate(memory_id, "retired", "restored")

    def _reactivate(self, memory_id: int, from_status: str, event: str) -> str | None:
        """Make a held or retired memory active again, with a history row; return why it was out of recall."""
        with self.write():
            row = self.db.execute(
                "SELECT version, script, trajectory, status, coalesce(flag, retired_reason) FROM memories WHERE id = ?",
                [memory_id],
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no memory with id {memory_id}")
            if row[3] != from_status:
                return None
            self.db.execute(
                "UPDATE memories SET status = 'active', flag = NULL, retired_reason = NULL, retired_at = NULL, "
                "merged_into = NULL WHERE id = ?",
                [memory_id],
            )
            reason = f"{event} (was {from_status}: {row[4]})"
            self._history(memory_id, row[0], event, row[1], row[2], row[1], row[2], None, reason, now())
            return str(row[4])

    def purge_retired(self) -> int:
        """Delete retired memories for good, with their vectors, history, trajectories and cached scripts."""
        with self.write():
            ids = [r[0] for r in self.db.execute("SELECT id FROM memories WHERE status = 'retired'").fetchall()]
            for memory_id in ids:
                tid = self.db.execute("SELECT trajectory_id FROM memories WHERE id = ?", [memory_id]).fetchone()[0]
                self.db.execute(f"DELETE FROM {VEC_TABLE} WHERE memory_id = ?", [memory_id])
                self.db.execute(f"DELETE FROM {PLAIN_TABLE} WHERE memory_id = ?", [memory_id])
                self.db.execute("DELETE FROM memory_keywords WHERE memory_id = ?", [memory_id])
                self.db.execute("DELETE FROM memory_history WHERE memory_id = ?", [memory_id])
                self.db.execute("DELETE FROM recall_items WHERE memory_id = ?", [memory_id])
                self.db.execute("DELETE FROM outcome_items WHERE memory_id = ?", [memory_id])
                self.db.execute("DELETE FROM memories WHERE id = ?", [memory_id])
                self.db.execute("DELETE FROM scripts WHERE trajectory_id = ?", [tid])
                self.db.execute("DELETE FROM trajectories WHERE id = ?", [tid])
            if ids:
                self._drop_bits(set(ids))
        return len(ids)

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector."""
        row = self.db.execute(f"SELECT embedding FROM {PLAIN_TABLE} WHERE memory_id = ?", [memory_id]).fetchone()
        if row is None:
            raise NotFoundError(f"memory {memory_id} has no vector")
        blob = row[0]
        return list(struct.unpack(f"{len(blob) // 4}f", blob))

    def log_recalls(self, recalls: Sequence[tuple[str, str, str, int, Sequence[tuple[int, float]]]]) -> None:
        """Record recalls (id, task, policy, k, hits) and the memories they returned, in one write."""
        stamp = now()
        with self.write():
            self.db.executemany(
                "INSERT INTO recalls(id, task, policy, k, created_at) VALUES (?, ?, ?, ?, ?)",
                [(recall_id, task, policy, k, stamp) for recall_id, task, policy, k, _ in recalls],
            )
            items = [
                (recall_id, memory_id, rank, score)
                for recall_id, _, _, _, hits in recalls
                for rank, (memory_id, score) in enumerate(hits, 1)
            ]
            self.db.executemany(
                "INSERT INTO recall_items(recall_id, memory_id, rank, score) VALUES (?, ?, ?, ?)", items
            )
            self.db.executemany(
                "UPDATE memories SET recalled = recalled + 1, last_recalled_at = ? WHERE id = ?",
                [(stamp, memory_id) for _, memory_id, _, _ in items],
            )

    # -- reading --------------------------------------------------------------------------------------------------

    def vector_count(self) -> int:
        """Return how many vectors the store holds (read once per open store: it only picks the search path)."""
        if self._vectors is None:
            # Summed from the bit pages' id blobs (a few dozen rows, their lengths read from the record headers):
            # count(*) over memories walks an index of every memory, ~2.5 ms of a fresh recall at 100k.
            self._vectors = int(
                self.db.execute(f"SELECT coalesce(sum(length(ids)), 0) / 8 FROM {BIT_TABLE}").fetchone()[0]
            )
        return self._vectors

    def preload_vectors(self) -> None:
        """Hold the active memories' vectors in memory, for many searches in one process (batch recall).

        Reading them costs one scan (~0.1 s at 10k memories); each search is then an exact matrix product (~1 ms at
        10k), instead of a scan of the vector table per query. Writes made meanwhile are not seen by it.
        """
        import numpy as np

        if self.embed_model() is None:
            return
        dim = self.embed_model()[1]  # type: ignore[index]
        cursor = self.db.execute(
            f"SELECT v.memory_id, v.embedding FROM {PLAIN_TABLE} v JOIN memories m ON m.id = v.memory_id "
            "WHERE m.status = 'active'"
        )
        # Filled in place, a few thousand rows at a time: reading every row first, then joining them, held the
        # vectors three times over (~450 MB at 100k memories).
        ids = np.empty(self.vector_count(), dtype=np.int64)
        matrix = np.empty((len(ids), dim), dtype=np.float32)
        filled = 0
        while rows := cursor.fetchmany(4096):
            if filled + len(rows) > len(ids):  # memories added since the count: make room
                ids = np.concatenate([ids, np.empty(len(rows), dtype=np.int64)])
                matrix = np.concatenate([matrix, np.empty((len(rows), dim), dtype=np.float32)])
            ids[filled : filled + len(rows)] = [r[0] for r in rows]
            matrix[filled : filled + len(rows)] = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
                len(rows), dim
            )
            filled += len(rows)
        self._preloaded = (ids[:filled], matrix[:filled])

    def nearest(self, vector: Sequence[float], k: int, exact: bool | None = None) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories nearest to `vector`, best first.

        Large stores search the binary index first (unless `exact`); small ones scan the full vectors; preloaded
        vectors are searched in memory.
        """
        if self.embed_model() is None or k <= 0:
            return []
        if self._preloaded is not None and exact is None:
            return self.nearest_many([vector], k)[0]
        if exact is None:
            exact = self.vector_count() < QUANTIZED_ABOVE
        blob = _pack(vector)
        fetch = min(k, MAX_KNN)
        pages = None
        while True:
            if exact:
                # The KNN runs alone in a CTE: sqlite-vec needs `k = ?` on the vec0 scan itself.
                sql = (
                    f"WITH knn AS (SELECT memory_id, distance FROM {VEC_TABLE} WHERE embedding MATCH ? AND k = ?) "
                    "SELECT knn.memory_id, knn.distance, m.status = 'active' FROM knn "
                    "JOIN memories m ON m.id = knn.memory_id ORDER BY knn.distance"
                )
                params: list[Any] = [blob, fetch]
            else:
                from . import bits

                if pages is None:
                    pages = self.db.execute(f"SELECT ids, bits FROM {BIT_TABLE}").fetchall()
                candidates = bits.nearest(pages, vector, min(MAX_KNN, max(MIN_CANDIDATES, OVERSAMPLE * fetch)))
                marks = ",".join("?" * len(candidates))
                sql = (
                    "SELECT v.memory_id, vec_distance_cosine(v.embedding, ?) AS d, m.status = 'active' "
                    f"FROM {PLAIN_TABLE} v JOIN memories m ON m.id = v.memory_id "
                    f"WHERE v.memory_id IN ({marks}) ORDER BY d"
                )
                params = [blob, *candidates]
            rows = self.db.execute(sql, params).fetchall()
            active = [(int(r[0]), 1.0 - float(r[1])) for r in rows if r[2]]
            # Held and retired memories are filtered after the scan: widen it until k active ones are found.
            if len(active) >= k or len(rows) < fetch or fetch >= MAX_KNN:
                return active[:k]
            fetch = min(fetch * 4, MAX_KNN)

    def nearest_many(self, vectors: Sequence[Sequence[float]], k: int) -> list[list[tuple[int, float]]]:
        """Return `nearest` for each vector: with preloaded vectors, one matrix product for all of them."""
        if self._preloaded is None or self.embed_model() is None or k <= 0:
            return [self.nearest(vector, k) for vector in vectors]
        import numpy as np

        ids, matrix = self._preloaded
        if not len(ids) or not len(vectors):
            return [[] for _ in vectors]
        k = min(k, len(ids))
        queries = np.asarray(vectors, dtype=np.float32)
        out = []
        # One product for all the queries reads the vectors once; the top k is picked a row at a time, as argpartition
        # over the whole score matrix would hold as many int64 positions (50 MB for 64 queries at 100k memories).
        for row in queries @ matrix.T:
            candidates = np.argpartition(-row, k - 1)[:k]
            best = candidates[np.argsort(-row[candidates])]
            out.append([(int(ids[i]), float(row[i])) for i in best])
        return out

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
        self, limit: int | None = None, kind: str | None = None, outcome: str | None = None,
        status: str | None = None,
    ) -> list[Memory]:
        """Return memories, newest first, optionally filtered by kind, outcome and status."""
        where, params = ["1 = 1"], []
        if status:
            where.append("m.status = ?")
            params.append(status)
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


    # -- keywords (AveFact) and full text (hybrid) -----------------------------------------------------------------

    def memories_without_keywords(self) -> list[tuple[int, str]]:
        """Return (memory id, task) of memories whose keywords were not extracted yet."""
        rows = self.db.execute(
            "SELECT id, task FROM memories m WHERE NOT EXISTS "
            "(SELECT 1 FROM memory_keywords k WHERE k.memory_id = m.id) ORDER BY id"
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def reset_keywords(self) -> None:
        """Forget which memory has which keywords (another extractor will fill them in again)."""
        with self.write():
            self.db.execute("DELETE FROM memory_keywords")

    def known_keywords(self, words: Sequence[str]) -> set[str]:
        """Return which of `words` have a stored vector."""
        found: set[str] = set()
        for start in range(0, len(words), 500):
            chunk = list(words[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT word FROM keywords WHERE word IN ({marks})", chunk))
        return found

    def add_keywords(self, vectors: dict[str, list[float]], links: Sequence[tuple[int, list[str]]]) -> None:
        """Store keyword vectors and which memory has which keywords, in one transaction."""
        with self.write():
            for word, vector in vectors.items():
                self.db.execute("INSERT OR IGNORE INTO keywords(word, embedding) VALUES (?, ?)", [word, _pack(vector)])
            for memory_id, words in links:
                for word in dict.fromkeys(words):
                    self.db.execute(
                        "INSERT OR IGNORE INTO memory_keywords(memory_id, keyword_id) "
                        "SELECT ?, id FROM keywords WHERE word = ?",
                        [memory_id, word],
                    )

    def keyword_state(self) -> tuple[int, ...]:
        """Return numbers that change whenever keywords, memberships or memory statuses change."""
        row = self.db.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM keywords), (SELECT count(*) FROM memory_keywords), "
            "(SELECT count(*) FROM memories WHERE status = 'active'), (SELECT coalesce(max(id), 0) FROM memories)"
        ).fetchone()
        return tuple(int(v) for v in row)

    def keyword_index(self) -> tuple[list[int], list[list[int]], list[str], list[bytes]]:
        """Return active memory ids, each one's keyword positions, and the keywords with their vector blobs."""
        words, blobs, position = [], [], {}
        for kid, word, blob in self.db.execute("SELECT id, word, embedding FROM keywords ORDER BY id"):
            position[kid] = len(words)
            words.append(word)
            blobs.append(blob)
        members: dict[int, list[int]] = {}
        for memory_id, kid in self.db.execute(
            "SELECT k.memory_id, k.keyword_id FROM memory_keywords k JOIN memories m ON m.id = k.memory_id "
            "WHERE m.status = 'active' ORDER BY k.memory_id"
        ):
            members.setdefault(int(memory_id), []).append(position[kid])
        ids = list(members)
        return ids, [members[i] for i in ids], words, blobs

    def full_text(self, terms: Sequence[str], n: int) -> list[tuple[int, float]]:
        """Return (memory id, BM25 score, higher is better) of active memories matching any of `terms`."""
        if not terms:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self.db.execute(
            "SELECT f.rowid, -bm25(memories_fts) AS score FROM memories_fts f JOIN memories m ON m.id = f.rowid "
            "WHERE memories_fts MATCH ? AND m.status = 'active' ORDER BY bm25(memories_fts) LIMIT ?",
            [query, n],
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the cosine between `vector` and each memory's task vector."""
        if not memory_ids or self.embed_model() is None:
            return {}
        marks = ",".join("?" * len(memory_ids))
        rows = self.db.execute(
            f"SELECT memory_id, vec_distance_cosine(embedding, ?) FROM {PLAIN_TABLE} WHERE memory_id IN ({marks})",
            [_pack(vector), *memory_ids],
        ).fetchall()
        return {int(r[0]): 1.0 - float(r[1]) for r in rows}

    def check(self) -> dict[str, Any]:
        """Return integrity findings: SQLite's own checks, and memories, vectors and trajectories that do not match."""
        problems: list[str] = []
        integrity = [r[0] for r in self.db.execute("PRAGMA integrity_check").fetchall()]
        if integrity != ["ok"]:
            problems.extend(f"integrity: {line}" for line in integrity[:10])
        fk = self.db.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems.append(f"{len(fk)} rows point at rows that do not exist (first in table {fk[0][0]})")
        counts = {
            "trajectories": self.db.execute("SELECT count(*) FROM trajectories").fetchone()[0],
            "memories": self.db.execute("SELECT count(*) FROM memories").fetchone()[0],
            "vectors": 0,
            "history_rows": self.db.execute("SELECT count(*) FROM memory_history").fetchone()[0],
            "recalls": self.db.execute("SELECT count(*) FROM recalls").fetchone()[0],
            "outcomes": self.db.execute("SELECT count(*) FROM outcomes").fetchone()[0],
            "pending_outcomes": self.db.execute("SELECT count(*) FROM outcomes WHERE applied = 0").fetchone()[0],
        }
        orphans = self.db.execute(
            "SELECT count(*) FROM trajectories t WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.trajectory_id = t.id)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} trajectories have no memory")
        no_history = self.db.execute(
            "SELECT count(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM memory_history h WHERE h.memory_id = m.id)"
        ).fetchone()[0]
        if no_history:
            problems.append(f"{no_history} memories have no history")
        if self.embed_model() is not None:
            counts["vectors"] = self.db.execute(f"SELECT count(*) FROM {VEC_TABLE}").fetchone()[0]
            missing = self.db.execute(
                f"SELECT count(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM {VEC_TABLE} v WHERE v.memory_id = m.id)"
            ).fetchone()[0]
            stray = self.db.execute(
                f"SELECT count(*) FROM {VEC_TABLE} v WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = v.memory_id)"
            ).fetchone()[0]
            for sql, what in (
                (f"SELECT coalesce(sum(length(ids)), 0) / 8 FROM {BIT_TABLE}", "the bit pages"),
                (f"SELECT count(*) FROM {PLAIN_TABLE}", "the plain vector table"),
            ):
                held = self.db.execute(sql).fetchone()[0]
                if held != counts["vectors"]:
                    problems.append(f"{what} holds {held} vectors, not {counts['vectors']}")
            if missing:
                problems.append(f"{missing} memories have no vector")
            if stray:
                problems.append(f"{stray} vectors belong to no memory")
        elif counts["memories"]:
            problems.append("memories exist but no embedding model is recorded")
        return {"path": str(self.path), "ok": not problems, "problems": problems, **counts}


def open_store(path: Path | None = None) -> Store:
    """Return the store at `path` (or the default), creating and migrating it as needed."""
    return Store(path or default_path())
