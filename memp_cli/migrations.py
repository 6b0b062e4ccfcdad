"""Schema changes, one small function each, applied in order and never edited once released."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("memp")


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
