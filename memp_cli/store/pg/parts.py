"""The parts of a PostgreSQL store that differ from SQLite's: the rest of each part is the shared module's SQL.

PgSettings sets the vector column's dimension when the store's embedding model is first recorded; PgMemories
measures the store's size in the database; PgKeywords searches the tsvector column for `hybrid` and says what
changed by the store's generation counter; PgTransfer has no file to copy.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

from ...errors import StoreError
from ..db import scope_filter
from ..keywords import SqliteKeywords
from ..memories import SqliteMemories
from ..settings import SqliteSettings
from ..transfer import SqliteTransfer
from .vectors import TABLE


class PgSettings(SqliteSettings):
    """Settings in `meta`, as SQLite keeps them; the first embedding model fixes the vector column's dimension."""

    def claim_embed_model(self, model_id: str, dim: int) -> None:
        """Record `model_id` as the store's embedding model unless one is recorded, else check it (inside a write)."""
        first = self.embed_model() is None
        super().claim_embed_model(model_id, dim)
        if first:
            # The table is empty until now: typing the column is instant, and pgvector checks every vector after.
            self._conn.execute(f"ALTER TABLE {TABLE} ALTER COLUMN embedding TYPE vector({int(dim)})")


class PgMemories(SqliteMemories):
    """Memories with the shared SQL; the store's size is what its tables and indexes take in the database."""

    def _bytes(self) -> int:
        row = self._conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
            [self._conn.schema],
        ).fetchone()
        return int(row[0])


class PgKeywords(SqliteKeywords):
    """Keywords with the shared SQL; full text from the `fts` tsvector column (GIN-indexed), ranked by ts_rank."""

    def state(self) -> tuple[int, ...]:
        """Return numbers that change whenever keywords, memberships or memories change (and differ between stores)."""
        row = self._conn.execute(
            "SELECT (SELECT value FROM meta WHERE key = 'store_id'), (SELECT value FROM meta WHERE key = 'generation'), "
            "(SELECT coalesce(max(id), 0) FROM keywords), (SELECT count(*) FROM memory_keywords)"
        ).fetchone()
        return (zlib.crc32(str(row[0]).encode()), int(row[1]), int(row[2]), int(row[3]))

    def full_text(self, terms: Sequence[str], n: int, scopes: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """Return (memory id, ts_rank score, higher is better) of up to `n` active memories matching any of `terms`."""
        if not terms:
            return []
        # Each term parsed on its own as plain text (never as tsquery syntax), the queries OR-ed together.
        query = " || ".join(["plainto_tsquery('english', ?)"] * len(terms))
        scoped, params = scope_filter("m.scope", scopes)
        rows = self._conn.execute(
            f"SELECT m.id, ts_rank(m.fts, q.q) AS score FROM memories m, (SELECT {query} AS q) q "
            f"WHERE m.fts @@ q.q AND m.status = 'active' AND {scoped} ORDER BY score DESC, m.id LIMIT ?",
            [*terms, *params, n],
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]


class PgTransfer(SqliteTransfer):
    """Export and import with the shared SQL; a copy of the whole store is `memp migrate`'s to make."""

    def snapshot(self, target: Path) -> None:
        """Refuse: a database is copied by `memp migrate --to FILE`, not as one file."""
        raise StoreError(f"{self._path}: a PostgreSQL store is copied with `memp migrate --to {target}`")
