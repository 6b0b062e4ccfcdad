"""The storage seam: `open_store(path)` returns a Store whose parts hold memories, vectors, the log and keywords.

    store = open_store(path)
    store.memories.get(7)                   # trajectories, memories, versions, retirement (memories.py)
    store.vectors.nearest(vector, k=3)      # the task vectors and their search (vectors.py, lists.py, bitfile.py)
    store.log.record_outcome(...)           # recalls and outcomes (log.py)
    store.keywords.full_text(["nginx"], 5)  # AveFact keywords and FTS5 (keywords.py)
    store.settings.get("update_policy")     # settings and the embedding model record (settings.py)
    store.transfer.memory_rows()            # whole memories out and in, for export and import (transfer.py)

The interfaces are in base.py; the SQLite implementation is in the other modules, the only ones with SQL.
Nothing heavy is imported here: sqlean, numpy and sqlite-utils load when a store is opened or searched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import Keywords, Log, Memories, NewMemory, Settings, Store, Transfer, Vectors
from .db import DB_FILENAME, default_path

__all__ = [
    "DB_FILENAME", "Keywords", "Log", "Memories", "NewMemory", "Settings", "SqliteStore", "Store", "Transfer", "Vectors",
    "default_path", "is_url", "location", "open_store",
]


class SqliteStore:
    """An open SQLite store: one connection shared by its parts."""

    def __init__(self, conn: Any, path: Path) -> None:
        from .keywords import SqliteKeywords
        from .log import SqliteLog
        from .memories import SqliteMemories
        from .settings import SqliteSettings
        from .transfer import SqliteTransfer
        from .vectors import SqliteVectors

        self.path = path
        # The connection itself, for tests and tools that read the tables directly.
        self.db = conn
        self.settings = SqliteSettings(conn, path)
        self.vectors = SqliteVectors(conn, self.settings, path)
        self.memories = SqliteMemories(conn, path, self.vectors, self.settings)
        self.log = SqliteLog(conn)
        self.keywords = SqliteKeywords(conn)
        self.transfer = SqliteTransfer(conn, path, self.vectors, self.settings)

    @contextmanager
    def write(self) -> Iterator[None]:
        """Run a block as one write transaction: all of it lands, or none of it (writes inside it join it)."""
        from .db import write

        with write(self.db):
            yield

    def check(self) -> dict[str, Any]:
        """Return integrity findings: SQLite's own checks, and memories, vectors and trajectories that do not match."""
        from .check import check

        return check(self.db, self.path, self.settings)

    def close(self) -> None:
        """Close the connection, first bringing the vectors' side file up to date with this process's writes."""
        try:
            self.vectors.close()
        finally:
            self.db.close()


def is_url(location: object) -> bool:
    """Return True when a --db or $MEMP_DB value names a PostgreSQL database rather than a store file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def location(path: Path | str | None = None) -> Path | str:
    """Return where the store is: `path`, else $MEMP_DB, else the default file; a URL stays a string."""
    chosen = path if path is not None else os.environ.get("MEMP_DB")
    if is_url(chosen):
        return str(chosen)
    return Path(chosen).expanduser() if chosen else default_path()


def open_store(path: Path | str | None = None, schema: str | None = None) -> Store:
    """Return the store at `path` (a file, or a postgresql:// URL; else $MEMP_DB, else the default), migrated.

    A PostgreSQL store lives in `schema` (else $MEMP_SCHEMA, else memp) of the database the URL names.
    """
    where = location(path)
    if isinstance(where, str):
        from .pg import open_pg_store

        return open_pg_store(where, schema)
    from . import db

    conn = db.connect(where)
    try:
        db.migrate(conn, where)
    except BaseException:
        conn.close()
        raise
    return SqliteStore(conn, where)
