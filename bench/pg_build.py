"""Where bench/run.py builds its stores: files in a temporary folder, or schemas of a PostgreSQL database (--db URL).

With `--db postgresql://...` each store size gets a schema of its own (`bench_<name>`, dropped before and after),
and every `memp` command the bench runs is pointed at it through $MEMP_SCHEMA; bytes per memory are then what the
schema's tables and indexes take (pg_total_relation_size), as `memp stats` reports them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memp_cli.store import is_url, open_store


@contextmanager
def store_at(db: str | None, tmp: Path, name: str) -> Iterator[str]:
    """Yield the --db of a new, empty store called `name`: a file in `tmp`, or a schema of the database `db`."""
    if db is None or not is_url(db):
        yield str(tmp / f"{name}.db")
        return
    schema = f"bench_{name}"
    _drop(db, schema)
    before = os.environ.get("MEMP_SCHEMA")
    os.environ["MEMP_SCHEMA"] = schema
    try:
        yield db
    finally:
        _drop(db, schema)
        if before is None:
            os.environ.pop("MEMP_SCHEMA", None)
        else:
            os.environ["MEMP_SCHEMA"] = before


def size_bytes(db: str) -> int:
    """Return the store's size: its file's, or its schema's tables and indexes."""
    if not is_url(db):
        return Path(db).stat().st_size
    store = open_store(db)
    try:
        return int(store.memories.stats()["bytes"])
    finally:
        store.close()


def settle(store: Any) -> None:
    """Leave a store as a user's would be after its writes: SQLite's WAL checkpointed, PostgreSQL's tables analysed."""
    conn = store.db
    if hasattr(conn, "dialect"):
        conn.execute("VACUUM ANALYZE")
    else:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _drop(db: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
