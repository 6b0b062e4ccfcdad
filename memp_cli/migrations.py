"""Schema changes as sqlite-utils migrations: one small named function each, applied in order.

Append only: a released migration is never edited; a change is a new function at the end. This module imports
nothing from memp (a migration must keep doing what it did when it was released, whatever the package becomes),
and it imports sqlite-utils at the top, so only opening a store that needs migrating loads it (~0.2 s).
"""

# db[name] is typed Table | View; these migrations only ever name tables, and released ones are not edited.
# mypy: disable-error-code="union-attr"

from __future__ import annotations

from sqlite_utils import Database, Migrations

MIGRATION_SET = "memp"
migrations = Migrations(MIGRATION_SET)


@migrations()
def m001_initial(db: Database) -> None:
    """Trajectories, the memories built from them, the script cache and the recall log."""
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["trajectories"].create(
        {
            "id": str,
            "task": str,
            "steps": str,
            "outcome": str,
            "score": float,
            "source_id": str,
            "source_file": str,
            "source_line": int,
            "metadata": str,
            "created_at": str,
        },
        pk="id",
        not_null={"task", "steps", "outcome", "created_at"},
    )
    db["memories"].create(
        {
            "id": int,
            "trajectory_id": str,
            "kind": str,
            "task": str,
            "script": str,
            "trajectory": str,
            "tokens": int,
            "model": str,
            "prompt_version": str,
            "version": int,
            "status": str,
            "recalled": int,
            "succeeded": int,
            "failed": int,
            "created_at": str,
            "updated_at": str,
            "last_recalled_at": str,
        },
        pk="id",
        foreign_keys=[("trajectory_id", "trajectories", "id")],
        not_null={"trajectory_id", "kind", "task", "tokens", "version", "status", "created_at"},
        defaults={"version": 1, "status": "active", "recalled": 0, "succeeded": 0, "failed": 0},
    )
    db["memories"].create_index(["trajectory_id"], unique=True)
    db["memories"].create_index(["status"])
    db["scripts"].create(
        {
            "trajectory_id": str,
            "model": str,
            "prompt_version": str,
            "script": str,
            "input_tokens": int,
            "output_tokens": int,
            "created_at": str,
        },
        pk=("trajectory_id", "model", "prompt_version"),
        not_null={"script"},
    )
    db["recalls"].create(
        {"id": str, "task": str, "policy": str, "k": int, "created_at": str},
        pk="id",
    )
    db["recall_items"].create(
        {"recall_id": str, "memory_id": int, "rank": int, "score": float},
        pk=("recall_id", "memory_id"),
        foreign_keys=[("recall_id", "recalls", "id"), ("memory_id", "memories", "id")],
    )


@migrations()
def m002_outcomes_history_retirement(db: Database) -> None:
    """Outcome reports with the memories they credit, every change to a memory, and retirement."""
    db["memories"].add_column("retired_reason", str)
    db["memories"].add_column("retired_at", str)
    db["memories"].add_column("merged_into", int)
    db["memory_history"].create(
        {
            "id": int,
            "memory_id": int,
            "version": int,
            "event": str,
            "old_script": str,
            "new_script": str,
            "old_trajectory": str,
            "new_trajectory": str,
            "model": str,
            "reason": str,
            "created_at": str,
        },
        pk="id",
        not_null={"memory_id", "version", "event", "created_at"},
    )
    db["memory_history"].create_index(["memory_id", "version"])
    # Memories built before history existed get their "built" row, so every version can be restored.
    db.execute(
        "INSERT INTO memory_history(memory_id, version, event, new_script, new_trajectory, model, reason, created_at) "
        "SELECT id, version, 'built', script, trajectory, model, 'ingested', created_at FROM memories"
    )
    db["outcomes"].create(
        {
            "id": int,
            "recall_id": str,
            "outcome": str,
            "score": float,
            "policy": str,
            "trajectory": str,
            "applied": int,
            "created_at": str,
        },
        pk="id",
        not_null={"outcome", "policy", "applied", "created_at"},
    )
    # One report per recall: a retried `memp update` must not count twice.
    db.execute("CREATE UNIQUE INDEX idx_outcomes_recall ON outcomes(recall_id) WHERE recall_id IS NOT NULL")
    db["outcomes"].create_index(["applied"])
    db["outcome_items"].create(
        {"outcome_id": int, "memory_id": int},
        pk=("outcome_id", "memory_id"),
        foreign_keys=[("outcome_id", "outcomes", "id")],
    )


@migrations()
def m003_held_memories(db: Database) -> None:
    """Why a memory is held back from recall until approved (text that reads like an instruction)."""
    db["memories"].add_column("flag", str)


@migrations()
def m004_keywords_and_full_text(db: Database) -> None:
    """Per-task keywords with their vectors (AveFact), and a full-text index over task and script (hybrid)."""
    db["keywords"].create({"id": int, "word": str, "embedding": bytes}, pk="id", not_null={"word"})
    db["keywords"].create_index(["word"], unique=True)
    db["memory_keywords"].create(
        {"memory_id": int, "keyword_id": int},
        pk=("memory_id", "keyword_id"),
        foreign_keys=[("memory_id", "memories", "id"), ("keyword_id", "keywords", "id")],
    )
    # Triggers keep the index in step with every insert, revision and purge.
    db["memories"].enable_fts(["task", "script"], create_triggers=True, tokenize="porter")


@migrations()
def m005_binary_index(db: Database) -> None:
    """A binary-quantised copy of the task vectors: the first pass of recall in large stores."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_vec'").fetchone()
    if exists:
        dim = int(db.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()[0])
        db.execute(f"CREATE VIRTUAL TABLE memory_bits USING vec0(memory_id INTEGER PRIMARY KEY, embedding bit[{dim}])")
        db.execute(
            "INSERT INTO memory_bits(memory_id, embedding) "
            "SELECT memory_id, vec_quantize_binary(embedding) FROM memory_vec"
        )


@migrations()
def m006_plain_vectors(db: Database) -> None:
    """Task vectors in a plain table too: sqlite-vec's vec0 answers lookups by id in ~0.3 ms each, this in ~5 us."""
    db.execute("CREATE TABLE memory_vectors (memory_id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_vec'").fetchone():
        db.execute("INSERT INTO memory_vectors(memory_id, embedding) SELECT memory_id, embedding FROM memory_vec")


@migrations()
def m007_bit_pages(db: Database) -> None:
    """Sign bits packed in pages, scanned with numpy, in place of sqlite-vec's bit index (28 ms -> ~2 ms at 100k)."""
    db.execute("CREATE TABLE memory_bit_pages (page INTEGER PRIMARY KEY, ids BLOB NOT NULL, bits BLOB NOT NULL)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_bits'").fetchone():
        db.execute("DROP TABLE memory_bits")
    dim = db.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()
    if dim is None:
        return
    import numpy as np

    # The page layout of release m007, written out here so that this migration never changes with the package:
    # 4,096 memories a page, their ids as int64, then their sign bits (bit i set when component i > 0, little-endian
    # within each byte) in 64-bit words, column-major: every memory's first word, then every memory's second, ...
    page_vectors = 4096
    words = (int(dim[0]) + 63) // 64
    cursor = db.execute("SELECT memory_id, embedding FROM memory_vectors ORDER BY memory_id")
    page = 0
    while rows := cursor.fetchmany(page_vectors):
        ids = np.asarray([r[0] for r in rows], dtype="<i8")
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), int(dim[0]))
        packed = np.packbits(vectors > 0, axis=1, bitorder="little")
        packed = np.pad(packed, ((0, 0), (0, words * 8 - packed.shape[1])))
        bits = np.ascontiguousarray(packed).view("<u8")
        blobs = ids.tobytes(), np.ascontiguousarray(bits.T).tobytes()
        db.execute("INSERT INTO memory_bit_pages(page, ids, bits) VALUES (?, ?, ?)", [page, *blobs])
        page += 1


@migrations()
def m008_full_text_on_text_changes(db: Database) -> None:
    """Re-index a memory's full text only when its task or script changes, not on every recall's counter update.

    sqlite-utils' trigger fired on any update: each recall re-tokenised the task and script of every memory it
    returned (~0.5 ms a memory, most of the cost of logging a recall).
    """
    db.execute("DROP TRIGGER IF EXISTS memories_au")
    db.execute(
        'CREATE TRIGGER "memories_au" AFTER UPDATE OF "task", "script" ON "memories" BEGIN\n'
        '  INSERT INTO "memories_fts" ("memories_fts", rowid, "task", "script") '
        'VALUES(\'delete\', old.rowid, old."task", old."script");\n'
        '  INSERT INTO "memories_fts" (rowid, "task", "script") VALUES (new.rowid, new."task", new."script");\n'
        "END"
    )


@migrations()
def m009_vectors_stored_once(db: Database) -> None:
    """Each task vector once: drop sqlite-vec's vec0 copy; `memory_vectors` (with the bit pages) holds them all.

    Since m006 every vector was written to both tables, and every read by id went to `memory_vectors`. The vec0
    table's own scan was faster only for the exact search of whole stores (see memp_cli/store/vectors.py).
    The pages it frees are reused by later writes; `VACUUM` gives them back to the file system.
    """
    db.execute("DROP TABLE IF EXISTS memory_vec")


@migrations()
def m010_build_column_and_script_cache(db: Database) -> None:
    """Names that say what they hold: the memory's build policy column `kind` -> `build`, `scripts` -> `script_cache`.

    Neither is named by an index or a trigger (the full-text triggers read `task` and `script` only).
    """
    db.execute("ALTER TABLE memories RENAME COLUMN kind TO build")
    db.execute("ALTER TABLE scripts RENAME TO script_cache")


@migrations()
def m011_task_index(db: Database) -> None:
    """An index on each memory's task as compared across attempts (trimmed, lower-case): runs of one task found fast."""
    db.execute("CREATE INDEX idx_memories_task_key ON memories(lower(trim(task)))")


@migrations()
def m012_scopes(db: Database) -> None:
    """Each memory's scope (a namespace: a project, a team), every existing memory in 'default'; indexed with status.

    Recall, list and stats filter on (scope, status) together, so one index serves both.
    """
    db.execute("ALTER TABLE memories ADD COLUMN scope TEXT NOT NULL DEFAULT 'default'")
    db.execute("CREATE INDEX idx_memories_scope_status ON memories(scope, status)")


@migrations()
def m013_lifecycle_keys(db: Database) -> None:
    """The keys that make lifecycle writes happen once: which outcome a revision applied, and a ledger of merges.

    `memory_history.outcome_id` names the outcome a revision carried out; a unique index allows one revision per
    (memory, outcome), however many processes apply it. `memory_merges` records what each merge moved (the counts
    of the memory merged, added to the one it went into): one row per memory merged, kept after a purge (the
    memory's id then NULL) so the counts of the memory it went into stay explained, and undone by a restore.
    """
    db.execute("ALTER TABLE memory_history ADD COLUMN outcome_id INTEGER")
    db.execute(
        "CREATE UNIQUE INDEX idx_history_outcome ON memory_history(memory_id, outcome_id) WHERE outcome_id IS NOT NULL"
    )
    db.execute(
        "CREATE TABLE memory_merges (id INTEGER PRIMARY KEY, memory_id INTEGER UNIQUE, into_id INTEGER NOT NULL, "
        "recalled INTEGER NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL, created_at TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX idx_merges_into ON memory_merges(into_id)")
    # Merges made before the ledger moved the merged memory's counts as they still are.
    db.execute(
        "INSERT INTO memory_merges(memory_id, into_id, recalled, succeeded, failed, created_at) "
        "SELECT id, merged_into, recalled, succeeded, failed, coalesce(retired_at, created_at) FROM memories "
        "WHERE merged_into IS NOT NULL AND status = 'retired'"
    )


@migrations()
def m014_half_vectors_and_side_bits(db: Database) -> None:
    """Task vectors as float16 (half the bytes, the same top results); their sign bits move to a side file.

    The bit pages are dropped: the side file `<store>-bits` is rebuilt from `memory_vectors` when missing or stale,
    which the counters written here (and bumped by every vector write) tell, with a random token per store.
    """
    import secrets

    db.execute("DROP TABLE IF EXISTS memory_bit_pages")
    dim = db.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()
    if dim is not None:
        import numpy as np

        # Converted CHUNK rows at a time by id range, so memory stays bounded whatever the store's size.
        last = 0
        while rows := db.execute(
            "SELECT memory_id, embedding FROM memory_vectors WHERE memory_id > ? ORDER BY memory_id LIMIT 4096", [last]
        ).fetchall():
            halves = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype("<f2").reshape(len(rows), -1)
            db.conn.executemany(
                "UPDATE memory_vectors SET embedding = ? WHERE memory_id = ?",
                [(half.tobytes(), r[0]) for half, r in zip(halves, rows)],
            )
            last = rows[-1][0]
    count = db.execute("SELECT count(*) FROM memory_vectors").fetchone()[0]
    db.conn.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [("vectors_generation", "1"), ("vectors_removals", "0"), ("vectors_count", str(count)),
         ("vectors_token", secrets.token_hex(16))],
    )


@migrations()
def m015_history_and_cache_without_copies(db: Database) -> None:
    """History rows copy no text a memory holds already; offline scripts leave the script cache.

    The row that built a memory and the rows that change only its status (retired, merged, restored, approved) stand
    for the memory's text at their version: the next row's old text, or the memory's own when none follows, as
    memp_cli/store/history.py fills them in. Their texts are left out here wherever that gives them back exactly
    (any other row keeps them). The cache keeps model answers only: the offline distiller makes its scripts again,
    the same, for less than a lookup. Both tables are rewritten without the copies (memory stays bounded: CHUNK
    memories at a time), so their old pages go to the free list for later writes; `VACUUM` gives them back to the
    file system.
    """
    chunk = 4096
    built = "built"
    textless = {built, "retired", "merged", "restored", "approved"}

    def rewrite(table: str) -> tuple[str, list[str], list[str]]:
        """Rename `table` aside and create it anew, empty, as it was; return the old name, its columns, indexes."""
        create = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()[0]
        indexes = [r[0] for r in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", [table]
        )]
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        aside = f"{table}_before_m015"
        db.execute(f"ALTER TABLE {table} RENAME TO {aside}")
        db.execute(create)
        return aside, columns, indexes

    def finish(aside: str, indexes: list[str]) -> None:
        db.execute(f"DROP TABLE {aside}")
        for sql in indexes:
            db.execute(sql)

    aside, columns, indexes = rewrite("script_cache")
    db.execute(f"INSERT INTO script_cache({', '.join(columns)}) SELECT {', '.join(columns)} FROM {aside} "
               "WHERE model IS NOT 'offline' ORDER BY rowid")
    finish(aside, indexes)

    aside, columns, indexes = rewrite("memory_history")
    col = {name: i for i, name in enumerate(columns)}
    texts = [col["old_script"], col["new_script"], col["old_trajectory"], col["new_trajectory"]]
    insert = f"INSERT INTO memory_history({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    low, high = db.execute(f"SELECT min(memory_id), max(memory_id) FROM {aside}").fetchone()
    start = low if low is not None else 1
    while high is not None and start <= high:
        end = start + chunk
        current = {r[0]: (r[1], r[2]) for r in db.execute(
            "SELECT id, script, trajectory FROM memories WHERE id >= ? AND id < ?", [start, end]
        )}
        rows = [list(r) for r in db.execute(
            f"SELECT {', '.join(columns)} FROM {aside} WHERE memory_id >= ? AND memory_id < ? ORDER BY memory_id, id",
            [start, end],
        )]
        by_memory: dict[int, list[list[object]]] = {}
        for row in rows:
            by_memory.setdefault(row[col["memory_id"]], []).append(row)
        for memory_id, history in by_memory.items():
            if memory_id not in current:
                continue  # no memory to fill its rows in from: they keep their texts
            # Newest first: the text just after each row is the old text of the row after it (history.py's walk).
            after = current[memory_id]
            for row in reversed(history):
                before = (row[col["old_script"]], row[col["old_trajectory"]])
                expected = (None, None) if row[col["event"]] == built else after
                if row[col["event"]] in textless and (row[col["new_script"]], row[col["new_trajectory"]]) == after \
                        and before == expected:
                    for i in texts:
                        row[i] = None
                after = before
        db.conn.executemany(insert, rows)
        start = end
    finish(aside, indexes)


@migrations()
def m016_row_counters(db: Database) -> None:
    """Counters in `meta` of the active memories and the keyword memberships, kept by triggers.

    Every fresh recall asked the store for both counts (the state its procedure index is checked against): at 1M
    memories counting the active ones took ~70 ms. Triggers move the counters in the transaction of every write,
    whoever makes it (memp, an import, a copy made in SQL), so they never disagree with the rows; `memp check`
    compares them. Seeded here with the real counts; run again, it seeds them again.
    """
    active = db.execute("SELECT count(*) FROM memories WHERE status = 'active'").fetchone()[0]
    members = db.execute("SELECT count(*) FROM memory_keywords").fetchone()[0]
    db.conn.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [("active_memories", str(active)), ("memory_keywords", str(members))],
    )

    def bump(key: str, by: str) -> str:
        return f"UPDATE meta SET value = CAST(value AS INTEGER) + ({by}) WHERE key = '{key}';"

    is_active = "coalesce({}.status = 'active', 0)"
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memp_count_active_insert AFTER INSERT ON memories WHEN NEW.status = 'active' "
        f"BEGIN {bump('active_memories', '1')} END"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memp_count_active_delete AFTER DELETE ON memories WHEN OLD.status = 'active' "
        f"BEGIN {bump('active_memories', '-1')} END"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memp_count_active_update AFTER UPDATE OF status ON memories "
        f"WHEN {is_active.format('OLD')} != {is_active.format('NEW')} "
        f"BEGIN {bump('active_memories', is_active.format('NEW') + ' - ' + is_active.format('OLD'))} END"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memp_count_keywords_insert AFTER INSERT ON memory_keywords "
        f"BEGIN {bump('memory_keywords', '1')} END"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS memp_count_keywords_delete AFTER DELETE ON memory_keywords "
        f"BEGIN {bump('memory_keywords', '-1')} END"
    )


@migrations()
def m017_lean_runs(db: Database) -> None:
    """A run stored once: its steps deflated where smaller, a memory's text of it NULL where it is the run's render.

    `trajectories.steps` becomes the compact JSON of the steps or, when smaller, its raw DEFLATE as a BLOB (the
    value's type tells them apart). `memories.trajectory` becomes NULL where it equals the render of its stored run,
    which readers then render (memp_cli/store/runs.py), and '' where the memory keeps no run (a NULL before). The
    renderer is copied here as it was when released, and recorded as `trajectory_render` 1 in `meta`: the NULLs
    depend on it. Rows are rewritten in place, CHUNK runs at a time; the space they free is reused by later writes,
    and `VACUUM` (sqlite3 memp.db VACUUM, the store closed) gives it back to the file system.
    """
    import json
    import zlib

    chunk = 4096
    observation_chars = 300

    def render(task: str, steps: list[dict[str, str]], outcome: str | None, score: float | None) -> str:
        lines = [f"Task: {task}"]
        for step in steps:
            if step.get("thought"):
                lines.append(f"Thought: {step['thought']}")
            lines.append(f"> {step['action']}")
            if step.get("observation"):
                obs = " ".join(step["observation"].split())
                if len(obs) > observation_chars:
                    obs = obs[:observation_chars] + " ..."
                lines.append(obs)
        lines.append(f"Outcome: {outcome}" + (f" (score {score:g})" if score is not None else ""))
        return "\n".join(lines)

    def pack(steps: object) -> str | bytes:
        text = json.dumps(steps, ensure_ascii=False, separators=(",", ":"))
        raw = text.encode("utf-8")
        packer = zlib.compressobj(6, zlib.DEFLATED, -max(9, min(15, (len(raw) - 1).bit_length())))
        packed = packer.compress(raw) + packer.flush()
        return packed if len(packed) < len(raw) else text

    db.execute("UPDATE memories SET trajectory = '' WHERE trajectory IS NULL")
    last = 0
    while True:
        rows = db.execute(
            "SELECT t.rowid, t.task, t.steps, t.outcome, t.score, m.id, m.trajectory FROM trajectories t "
            "LEFT JOIN memories m ON m.trajectory_id = t.id WHERE t.rowid > ? ORDER BY t.rowid LIMIT ?",
            [last, chunk],
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        packed, emptied = [], []
        for rowid, task, steps, outcome, score, memory_id, text in rows:
            if not isinstance(steps, str):
                continue  # deflated already
            try:
                parsed = json.loads(steps)
                rendered = render(task, parsed, outcome, score)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a row no reader could parse stays as it is, for `memp check` to report
            packed.append((pack(parsed), rowid))
            if memory_id is not None and text and text == rendered:
                emptied.append((memory_id,))
        db.conn.executemany("UPDATE trajectories SET steps = ? WHERE rowid = ?", packed)
        db.conn.executemany("UPDATE memories SET trajectory = NULL WHERE id = ?", emptied)
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('trajectory_render', '1')")
