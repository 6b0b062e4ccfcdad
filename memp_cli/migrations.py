"""Schema changes, one small function each, applied in order and never edited once released."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database

MIGRATION_SET = "memp"


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


def m003_held_memories(db: Database) -> None:
    """Why a memory is held back from recall until approved (text that reads like an instruction)."""
    db["memories"].add_column("flag", str)


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


def m005_binary_index(db: Database) -> None:
    """A binary-quantised copy of the task vectors: the first pass of recall in large stores."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_vec'").fetchone()
    if exists:
        dim = int(db.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()[0])
        db.execute(f"CREATE VIRTUAL TABLE memory_bits USING vec0(memory_id INTEGER PRIMARY KEY, embedding bit[{dim}])")
        db.execute("INSERT INTO memory_bits(memory_id, embedding) SELECT memory_id, vec_quantize_binary(embedding) FROM memory_vec")



def m006_plain_vectors(db: Database) -> None:
    """Task vectors in a plain table too: sqlite-vec's vec0 answers lookups by id in ~0.3 ms each, this in ~5 us."""
    db.execute("CREATE TABLE memory_vectors (memory_id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_vec'").fetchone():
        db.execute("INSERT INTO memory_vectors(memory_id, embedding) SELECT memory_id, embedding FROM memory_vec")

def m007_bit_pages(db: Database) -> None:
    """Sign bits packed in pages, scanned with numpy, in place of sqlite-vec's bit index (28 ms -> ~2 ms at 100k)."""
    from .bits import PAGE_VECTORS, encode_page, sign_bits

    db.execute("CREATE TABLE memory_bit_pages (page INTEGER PRIMARY KEY, ids BLOB NOT NULL, bits BLOB NOT NULL)")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_bits'").fetchone():
        db.execute("DROP TABLE memory_bits")
    dim = db.execute("SELECT value FROM meta WHERE key = 'embed_dim'").fetchone()
    if dim is None:
        return
    import numpy as np

    cursor = db.execute("SELECT memory_id, embedding FROM memory_vectors ORDER BY memory_id")
    page = 0
    while rows := cursor.fetchmany(PAGE_VECTORS):
        ids = [r[0] for r in rows]
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), int(dim[0]))
        blobs = encode_page(ids, sign_bits(vectors))
        db.execute("INSERT INTO memory_bit_pages(page, ids, bits) VALUES (?, ?, ?)", [page, *blobs])
        page += 1


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


# In order. Append only: a released step is never edited, a change is a new step.
STEPS = [
    m001_initial,
    m002_outcomes_history_retirement,
    m003_held_memories,
    m004_keywords_and_full_text,
    m005_binary_index,
    m006_plain_vectors,
    m007_bit_pages,
    m008_full_text_on_text_changes,
]
NAMES = [step.__name__ for step in STEPS]


def migration_set() -> Any:
    """Return the steps as sqlite-utils Migrations (imported here: opening an up-to-date store does not need it)."""
    from sqlite_utils import Migrations

    migrations = Migrations(MIGRATION_SET)
    for step in STEPS:
        migrations()(step)
    return migrations

