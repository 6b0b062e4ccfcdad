"""Whole memories in and out of a store: every column, version, cached script, keyword and outcome, for export/import.

Rows cross this seam as plain dicts keyed by column name; `memp_cli/transfer/` turns them into the export format
and back. Memories are named by their trajectory id (a hash of the run) across stores, since memory ids are local.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..records import Trajectory
from .copy import RowCopy
from .db import scope_filter, write
from .history import HISTORY_FIELDS, fill, slim
from .runs import decode_steps, pack_steps, run_text, steps_text, stored_text
from .settings import SqliteSettings
from .sql import dialect
from .vectors import FLOAT_TABLE, SqliteVectors

TRAJECTORY_COLUMNS = ("id", "task", "steps", "outcome", "score", "source_id", "source_file", "source_line",
                      "metadata", "created_at")
MEMORY_COLUMNS = ("build", "task", "script", "trajectory", "tokens", "model", "prompt_version", "version", "status",
                  "flag", "retired_reason", "retired_at", "recalled", "succeeded", "failed", "created_at",
                  "updated_at", "last_recalled_at", "scope")
HISTORY_COLUMNS = HISTORY_FIELDS  # a memory's history as `memp history` prints it, every field exported
CACHE_COLUMNS = ("model", "prompt_version", "script", "input_tokens", "output_tokens", "created_at")
OUTCOME_COLUMNS = ("recall_id", "outcome", "score", "policy", "trajectory", "applied", "created_at")
# How many rows one IN (...) names: SQLite's default limit on bound parameters is far above, and small is fast.
CHUNK = 500


class SqliteTransfer(RowCopy):
    """Reads and writes whole memories of one SQLite store, with everything that refers to them (and, from
    RowCopy, every table row by row for `memp migrate`)."""

    _steps_blob = True  # steps stored deflated where smaller (runs.py); PostgreSQL keeps the JSON text

    def __init__(self, conn: Any, path: Path, vectors: SqliteVectors, settings: SqliteSettings) -> None:
        self._conn = conn
        self._path = path
        self._vectors = vectors
        self._settings = settings

    # -- reading ----------------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """Return the store's settings (update policy, keyword extractor, ...) by name."""
        rows = self._conn.execute("SELECT key, value FROM meta WHERE key LIKE 'setting:%' ORDER BY key").fetchall()
        return {str(r[0]).removeprefix("setting:"): str(r[1]) for r in rows}

    def memory_rows(
        self, status: str | None = None, outcome: str | None = None, build: str | None = None,
        task_type: str | None = None, since: str | None = None, vectors: bool = False,
        scopes: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield each memory (oldest first, filtered) with its scope, run, history, cached scripts, keywords, vector."""
        scoped, scope_params = scope_filter("m.scope", scopes)
        where, params = [scoped], list(scope_params)
        for clause, value in (("m.status = ?", status), ("t.outcome = ?", outcome), ("m.build = ?", build),
                              (f"{dialect(self._conn).json_text('t.metadata', 'task_type')} = ?", task_type),
                              ("m.created_at >= ?", since)):
            if value:
                where.append(clause)
                params.append(value)
        columns = ", ".join([f"m.{c}" for c in MEMORY_COLUMNS] + [f"t.{c} AS run_{c}" for c in TRAJECTORY_COLUMNS])
        cursor = self._conn.execute(
            f"SELECT m.id AS memory_id, mi.trajectory_id AS merged_into, {columns} FROM memories m "
            "JOIN trajectories t ON t.id = m.trajectory_id LEFT JOIN memories mi ON mi.id = m.merged_into "
            f"WHERE {' AND '.join(where)} ORDER BY m.id",
            params,
        )
        while rows := cursor.fetchmany(CHUNK):
            batch = [dict(zip(r.keys(), r)) for r in rows]
            for r in batch:  # the run's steps as JSON text, the memory's text of it in full (runs.py)
                r["run_steps"] = steps_text(r["run_steps"])
                r["trajectory"] = run_text(r["trajectory"], r["run_task"], r["run_steps"], r["run_outcome"],
                                           r["run_score"])
            self._attach(batch, vectors)
            yield from batch

    def _attach(self, batch: list[dict[str, Any]], vectors: bool) -> None:
        """Add each memory's history, cached scripts, keywords and (when asked) vector blob to its row."""
        ids = [r["memory_id"] for r in batch]
        marks = ",".join("?" * len(ids))
        by_id = {r["memory_id"]: r for r in batch}
        for r in batch:
            r.update(history=[], script_cache=[], keywords=[], vector=None)
        # With each memory's text as this statement reads it, for the rows that stand for a version's text.
        now: dict[int, tuple[str | None, str | None]] = {}
        for row in self._conn.execute(
            f"SELECT h.memory_id, m.script, m.trajectory, {', '.join('h.' + c for c in HISTORY_COLUMNS)} "
            f"FROM memory_history h JOIN memories m ON m.id = h.memory_id WHERE h.memory_id IN ({marks}) "
            "ORDER BY h.id", ids,
        ):
            r = by_id[row[0]]
            r["history"].append(dict(zip(HISTORY_COLUMNS, tuple(row)[3:])))
            if row[0] not in now:
                now[row[0]] = (row[1], run_text(row[2], r["run_task"], r["run_steps"], r["run_outcome"],
                                                r["run_score"]))
        for r in batch:  # exported in full, every text filled in (history.py)
            r["history"] = fill(r["history"], now.get(r["memory_id"], (r["script"], r["trajectory"])))
        by_trajectory = {r["run_id"]: r for r in batch}
        for row in self._conn.execute(
            f"SELECT trajectory_id, {', '.join(CACHE_COLUMNS)} FROM script_cache "
            f"WHERE trajectory_id IN ({marks}) ORDER BY model, prompt_version", list(by_trajectory),
        ):
            by_trajectory[row[0]]["script_cache"].append(dict(zip(CACHE_COLUMNS, tuple(row)[1:])))
        for memory_id, word in self._conn.execute(
            f"SELECT mk.memory_id, k.word FROM memory_keywords mk JOIN keywords k ON k.id = mk.keyword_id "
            f"WHERE mk.memory_id IN ({marks}) ORDER BY k.word", ids,
        ):
            by_id[memory_id]["keywords"].append(word)
        if vectors:
            for memory_id, blob in self._vector_rows(
                f"SELECT memory_id, embedding FROM {FLOAT_TABLE} WHERE memory_id IN ({marks})", ids
            ):
                by_id[memory_id]["vector"] = blob

    def keyword_vectors(self, words: Sequence[str]) -> dict[str, bytes]:
        """Return the stored float32 blob of each of `words` that has one."""
        found: dict[str, bytes] = {}
        for start in range(0, len(words), CHUNK):
            chunk = list(words[start : start + CHUNK])
            marks = ",".join("?" * len(chunk))
            for word, blob in self._conn.execute(
                f"SELECT word, embedding FROM keywords WHERE word IN ({marks}) AND embedding IS NOT NULL", chunk
            ):
                found[word] = bytes(blob)
        return found

    def outcome_rows(self, trajectory_ids: set[str]) -> list[dict[str, Any]]:
        """Return the outcomes (oldest first) that credit any of these memories, naming memories by trajectory id."""
        outcomes: dict[int, dict[str, Any]] = {}
        for row in self._conn.execute(
            f"SELECT o.id, {', '.join('o.' + c for c in OUTCOME_COLUMNS)}, m.trajectory_id FROM outcomes o "
            "JOIN outcome_items oi ON oi.outcome_id = o.id JOIN memories m ON m.id = oi.memory_id "
            "ORDER BY o.id, oi.rowid"
        ):
            if row[-1] not in trajectory_ids:
                continue
            item = outcomes.setdefault(row[0], {**dict(zip(OUTCOME_COLUMNS, tuple(row)[1:-1])), "memories": []})
            item["memories"].append(row[-1])
        return list(outcomes.values())

    def is_empty(self) -> bool:
        """Return True when the store holds no memory."""
        return self._conn.execute("SELECT 1 FROM memories LIMIT 1").fetchone() is None

    # -- writing ----------------------------------------------------------------------------------------------------

    def add_records(
        self, memories: Sequence[dict[str, Any]], vectors: Sequence[Sequence[float]], embed_model: str,
        keyword_vectors: dict[str, bytes], outcomes: Sequence[dict[str, Any]], settings: dict[str, str],
    ) -> dict[str, int]:
        """Store whole memories (rows as `memory_rows` yields them, new trajectory ids only) in one transaction.

        Keywords missing from the store take their blob from `keyword_vectors`; outcomes already stored (by recall
        id, else by time, outcome, policy, score and run) are skipped. Return counts of what was added.
        """
        added = {"memories": 0, "outcomes": 0, "keywords": 0, "settings": 0}
        with write(self._conn):
            self._settings.check_embed_model(embed_model, len(vectors[0]) if vectors else None)
            ids: list[int] = []
            for item in memories:
                ids.append(self._add_memory(item))
            added["memories"] = len(ids)
            self._vectors.add(ids, vectors, embed_model)
            known = self._trajectory_memory_ids()
            for item, memory_id in zip(memories, ids):
                if item.get("merged_into") and item["merged_into"] in known:
                    self._conn.execute("UPDATE memories SET merged_into = ? WHERE id = ?",
                                       [known[item["merged_into"]], memory_id])
            added["keywords"] = self._add_keywords(memories, ids, keyword_vectors)
            for outcome in outcomes:
                added["outcomes"] += self._add_outcome(outcome, known)
            for key, value in settings.items():
                cur = self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                     [f"setting:{key}", value])
                added["settings"] += cur.rowcount
        return added

    def _add_memory(self, item: dict[str, Any]) -> int:
        """Insert one memory with its run, history and cached scripts inside the open write; return its new id."""
        from ..distill import OFFLINE_MODEL

        # Stored as memp stores a run (runs.py): its steps deflated where smaller, the memory's text of it NULL
        # where it is the render of the run.
        stored = {f"run_{c}": item[f"run_{c}"] for c in TRAJECTORY_COLUMNS}
        stored["run_steps"] = pack_steps(item["run_steps"], self._steps_blob)
        run = Trajectory(task=item["run_task"], steps=decode_steps(item["run_steps"]) if item["trajectory"] else [],
                         outcome=item["run_outcome"], score=item["run_score"])
        stored["trajectory"] = stored_text(item["trajectory"], run)
        cur = self._conn.execute(
            f"INSERT INTO trajectories({', '.join(TRAJECTORY_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(TRAJECTORY_COLUMNS))}) ON CONFLICT DO NOTHING",
            [stored[f"run_{c}"] for c in TRAJECTORY_COLUMNS],
        )
        if cur.rowcount == 0:
            raise StoreError(f"{self._path}: trajectory {item['run_id']} is stored already")
        cur = self._conn.execute(
            f"INSERT INTO memories(trajectory_id, {', '.join(MEMORY_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' * len(MEMORY_COLUMNS))}) RETURNING id",
            # An export made before scopes carries none: its memories were all in the one scope there was.
            [item["run_id"], *(item.get(c, "default") if c == "scope" else stored.get(c, item[c])
                               for c in MEMORY_COLUMNS)],
        )
        memory_id = int(cur.fetchone()[0])
        # Stored as memp writes history: without the texts that the memory and its revisions hold already.
        history = slim(item["history"], (item["script"], item["trajectory"]))
        self._conn.executemany(
            f"INSERT INTO memory_history(memory_id, {', '.join(HISTORY_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' * len(HISTORY_COLUMNS))})",
            [[memory_id, *(h[c] for c in HISTORY_COLUMNS)] for h in history],
        )
        self._conn.executemany(
            f"INSERT INTO script_cache(trajectory_id, {', '.join(CACHE_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' * len(CACHE_COLUMNS))}) ON CONFLICT DO NOTHING",
            # An older export's offline scripts are not kept: memp caches model answers only (memories.py).
            [[item["run_id"], *(s[c] for c in CACHE_COLUMNS)] for s in item["script_cache"]
             if s["model"] != OFFLINE_MODEL],
        )
        return memory_id

    def _trajectory_memory_ids(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self._conn.execute("SELECT trajectory_id, id FROM memories")}

    def _add_keywords(self, memories: Sequence[dict[str, Any]], ids: Sequence[int], blobs: dict[str, bytes]) -> int:
        """Link each new memory to its keywords, storing the words the store lacks; return how many words were new."""
        words = sorted({w for item in memories for w in item["keywords"]})
        before = self._conn.execute("SELECT count(*) FROM keywords").fetchone()[0]
        self._conn.executemany(
            "INSERT INTO keywords(word, embedding) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(w, blobs.get(w)) for w in words],
        )
        self._conn.executemany(
            "INSERT INTO memory_keywords(memory_id, keyword_id) SELECT ?, id FROM keywords WHERE word = ? "
            "ON CONFLICT DO NOTHING",
            [(memory_id, w) for item, memory_id in zip(memories, ids) for w in item["keywords"]],
        )
        return int(self._conn.execute("SELECT count(*) FROM keywords").fetchone()[0] - before)

    def _add_outcome(self, outcome: dict[str, Any], known: dict[str, int]) -> int:
        """Insert an outcome and the memories it credits unless it is stored already; return 1 when added."""
        if outcome["recall_id"] is not None:
            seen = self._conn.execute("SELECT 1 FROM outcomes WHERE recall_id = ?", [outcome["recall_id"]])
        else:
            seen = self._conn.execute(
                "SELECT 1 FROM outcomes WHERE recall_id IS NULL AND created_at = ? AND outcome = ? AND policy = ? "
                "AND score IS NOT DISTINCT FROM ? AND trajectory IS NOT DISTINCT FROM ?",
                [outcome["created_at"], outcome["outcome"], outcome["policy"], outcome["score"],
                 outcome["trajectory"]],
            )
        if seen.fetchone() is not None:
            return 0
        cur = self._conn.execute(
            f"INSERT INTO outcomes({', '.join(OUTCOME_COLUMNS)}) VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))}) "
            "RETURNING id",
            [outcome[c] for c in OUTCOME_COLUMNS],
        )
        outcome_id = int(cur.fetchone()[0])
        self._conn.executemany(
            "INSERT INTO outcome_items(outcome_id, memory_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(outcome_id, known[t]) for t in outcome["memories"] if t in known],
        )
        return 1

    def snapshot(self, target: Path) -> None:
        """Write a consistent copy of the whole store to `target` (a new file), as one plain SQLite file."""
        if target.exists():
            raise StoreError(f"{target}: exists already; name a new file")
        self._conn.execute("VACUUM INTO ?", [str(target)])
        # The copy holds what the store holds, secrets included: readable by its owner only, as the store is.
        os.chmod(target, 0o600)
