"""The PostgreSQL + pgvector backend: the same parts as the SQLite store, on a schema of a shared database.

    store = open_pg_store("postgresql://agent@db.internal/team", schema="memp")

db.py connects (psycopg, imported here only) and migrates; migrations.py holds the schema; vectors.py searches
pgvector; parts.py has what else differs from SQLite; every other query is the shared modules' standard SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .db import PgConnection


class PgStore:
    """An open PostgreSQL store: one connection shared by its parts, on one schema."""

    def __init__(self, conn: PgConnection, url: str) -> None:
        from ..log import SqliteLog
        from .parts import PgKeywords, PgMemories, PgSettings, PgTransfer
        from .vectors import PgVectors

        self.url = url
        self.schema = conn.schema
        # Where the store is, as messages and `memp stats` name it: the URL without a password, with the schema.
        from .db import display_url

        self.path = display_url(url, conn.schema)
        self.db = conn
        self.settings = PgSettings(conn, self.path)
        self.vectors = PgVectors(conn, self.settings)
        self.memories = PgMemories(conn, self.path, self.vectors, self.settings)  # type: ignore[arg-type]
        self.log = SqliteLog(conn)
        self.keywords = PgKeywords(conn)
        self.transfer = PgTransfer(conn, self.path, self.vectors, self.settings)  # type: ignore[arg-type]

    @contextmanager
    def write(self) -> Iterator[None]:
        """Run a block as one write transaction under the store's write lock (writes inside it join it)."""
        with self.db.write():
            yield

    def check(self) -> dict[str, Any]:
        """Return integrity findings: memories, vectors and trajectories that do not match, and the vector index."""
        from ..check import consistency
        from .vectors import HNSW_ABOVE

        def index_problems(conn: Any, vectors: int) -> list[str]:
            if vectors >= HNSW_ABOVE and not self.vectors.indexed():
                return [f"{vectors} vectors and no HNSW index (built when a write crosses {HNSW_ABOVE})"]
            return []

        return consistency(self.db, self.path, self.settings, [], index_problems)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


def open_pg_store(url: str, schema: str | None = None) -> PgStore:
    """Return the store in `schema` (else $MEMP_SCHEMA, else memp) of the database at `url`, migrated."""
    from . import db

    name = db.schema_name(schema)
    conn = db.connect(url, name)
    try:
        db.migrate(conn, db.display_url(url, name))
    except BaseException:
        conn.close()
        raise
    return PgStore(conn, url)
