"""The PostgreSQL connection: URL and schema, a connection the shared SQL modules use as they use SQLite's, write
transactions under one advisory lock, and versioned migrations run once however many processes start together.

The shared modules (memories, log, settings, keywords, transfer) write standard SQL with `?` placeholders, as
sqlite3 takes them; `PgConnection.execute` hands the same text to psycopg with `%s` in their place. Rows index by
position and by column name, as `sqlean.Row` does.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from ...errors import SchemaError, StoreError
from ..sql import POSTGRES, Dialect

SCHEMA_DEFAULT = "memp"
# Schema names are put into SQL as identifiers: letters, digits and underscores only, as PostgreSQL folds them.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MIGRATIONS_TABLE = "memp_migrations"


def schema_name(schema: str | None = None) -> str:
    """Return the schema to use: the one given, else $MEMP_SCHEMA, else `memp`; raise SchemaError when malformed."""
    name = schema or os.environ.get("MEMP_SCHEMA") or SCHEMA_DEFAULT
    if not _SCHEMA_NAME.fullmatch(name):
        raise SchemaError(f"schema {name!r}: use lower-case letters, digits and underscores (at most 63)")
    return name


def display_url(url: str, schema: str) -> str:
    """Return the URL without its password (in the user part or the query), with the schema, as messages name it."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, "")) + f"#{schema}"


def lock_key(schema: str, purpose: str) -> int:
    """Return the advisory lock key of one purpose (writes, migrations) in one schema: stores in other schemas of
    the same database never wait for each other."""
    return zlib.crc32(f"memp:{schema}:{purpose}".encode())


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """Return SQL written for sqlite3 (`?` placeholders) as psycopg takes it (`%s`, a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _row_factory(cursor: Any) -> Any:
    """Return psycopg's maker of rows that index by position and by column name, as sqlean.Row does."""
    if cursor.description is None:
        return tuple
    names = [c.name for c in cursor.description]
    index = {name: i for i, name in enumerate(names)}

    class Row(tuple):
        __slots__ = ()

        def __getitem__(self, key: Any) -> Any:
            return tuple.__getitem__(self, index[key] if isinstance(key, str) else key)

        def keys(self) -> list[str]:
            return names

    return Row


def _numbers(raw: Any) -> None:
    """Make the connection read NUMERIC (what sum() of integers gives) as int or float, as SQLite's sums come."""
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return float(text) if any(c in text for c in ".eEN") else int(text)

    raw.adapters.register_loader("numeric", NumberLoader)


class PgConnection:
    """One psycopg connection in autocommit, with nestable write transactions that hold the schema's write lock."""

    dialect: Dialect = POSTGRES

    def __init__(self, conn: Any, schema: str) -> None:
        self.raw = conn
        self.schema = schema
        self._depth = 0
        self._write_key = lock_key(schema, "write")
        self._pipeline: Any = None

    @property
    def in_transaction(self) -> bool:
        """Return True inside `write()`."""
        return self._depth > 0

    def execute(self, sql: str, params: Sequence[Any] | None = None, binary: bool = False) -> Any:
        """Run one statement (`?` placeholders) and return its cursor (inside a write, sent without waiting)."""
        if params is None:
            cursor = self.raw.execute(sql, binary=binary)
        else:
            cursor = self.raw.execute(_placeholders(sql), list(params), binary=binary)
        return cursor if self._pipeline is None else _Sent(cursor, self._pipeline)

    def executemany(self, sql: str, rows: Any) -> Any:
        """Run one statement for each row of parameters (sent in one pipeline)."""
        rows = [list(r) for r in rows]
        cursor = self.raw.cursor()
        if rows:
            cursor.executemany(_placeholders(sql), rows)
        return cursor if self._pipeline is None else _Sent(cursor, self._pipeline)

    @contextmanager
    def write(self) -> Iterator[None]:
        """Run a block as one transaction holding the schema's write lock; inside another, join that one.

        Every memp write takes the same transaction-level advisory lock first, so writers of one store go one at
        a time, as SQLite's BEGIN IMMEDIATE makes them: a lifecycle write reads what the writer before it left,
        counts are never lost and two prunes cannot merge two memories into each other. Reads never wait for it.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # In pipeline mode: a statement whose result nobody reads (most inserts of a batch) goes out without a round
        # trip of its own; reading a result (a row, a row count) waits for it, and an error surfaces there or at
        # the end of the block, rolling the whole transaction back as before.
        with self.raw.transaction(), self.raw.pipeline() as pipeline:
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", [self._write_key])
            self._depth, self._pipeline = 1, pipeline
            try:
                yield
            finally:
                self._depth, self._pipeline = 0, None
            # The generation counter (see migrations.py), moved once when the block changed memories.
            self.raw.execute(
                "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'generation' "
                "AND current_setting('memp.memories_changed', true) = 'yes'"
            )

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


class _Sent:
    """A cursor whose statement went out in a write's pipeline: its rows are fetched when read (psycopg waits for
    them), and its row count once the pipeline has caught up."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor: Any, pipeline: Any) -> None:
        self._cursor, self._pipeline = cursor, pipeline

    @property
    def rowcount(self) -> int:
        """Return the rows the statement changed, once its result is in."""
        self._pipeline.sync()
        return int(self._cursor.rowcount)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def connect(url: str, schema: str) -> PgConnection:
    """Return a connection to the database at `url`, its search path on `schema` (then where pgvector lives)."""
    import psycopg

    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
    except psycopg.Error as exc:
        raise StoreError(f"{display_url(url, schema)}: cannot connect: {str(exc).strip().splitlines()[0]}") from exc
    _numbers(raw)
    return PgConnection(raw, schema)


def vector_schema(conn: PgConnection) -> str | None:
    """Return the schema pgvector's types live in, None when the extension is not installed in this database."""
    row = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'").fetchone()
    return None if row is None else str(row[0])


def _use(conn: PgConnection) -> None:
    """Point the connection at the store's schema, pgvector's types beside it, and register pgvector's adapters.

    Two round trips: opening a store is part of every fresh `memp recall`.
    """
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    where, version, oid, array_oid = conn.execute(
        "SELECT e.extnamespace::regnamespace::text, e.extversion, t.oid, t.typarray FROM pg_extension e "
        "JOIN pg_type t ON t.typname = 'vector' AND t.typnamespace = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    path = ", ".join(f'"{p}"' for p in dict.fromkeys([conn.schema, str(where)]))
    # pgvector 0.8 keeps walking the HNSW graph until LIMIT rows pass the filter (held and retired memories, other
    # scopes); older versions stop at ef_search candidates and vectors.py falls back to the exact scan.
    iterative = tuple(int(p) for p in str(version).split(".")[:2]) >= (0, 8)
    conn.execute(
        "SELECT set_config('search_path', ?, false), set_config('hnsw.ef_search', '100', false)"
        + (", set_config('hnsw.iterative_scan', 'strict_order', false)" if iterative else ""),
        [path],
    )
    register_vector_info(conn.raw, TypeInfo("vector", int(oid), int(array_oid)))


def migrate(conn: PgConnection, where: str) -> None:
    """Bring the schema up to date, once however many processes start at once, refusing schemas not memp's or newer."""
    from .migrations import MIGRATIONS

    latest = MIGRATIONS[-1][0]
    try:
        if _latest(conn) == latest:
            _use(conn)
            return
        # The migration lock, not the write lock: a process that finds the schema migrated meanwhile writes at once.
        with conn.raw.transaction():
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(conn.schema, "migrate")])
            applied = _applied(conn)
            known = [name for name, _ in MIGRATIONS]
            newer = [name for name in applied if name not in known]
            if newer:
                raise StoreError(f"{where}: written by a newer memp (schema change {newer[-1]}); upgrade memp to open it")
            if not applied:
                others = _tables(conn)
                if others:
                    raise StoreError(f"{where}: not a memp store (schema {conn.schema} holds other tables: "
                                     f"{', '.join(others[:3])})")
                if vector_schema(conn) is None:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{conn.schema}"')
            _use(conn)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at text NOT NULL)")
            for name, sql in MIGRATIONS:
                if name in applied:
                    continue
                conn.execute(sql)
                conn.execute(f"INSERT INTO {MIGRATIONS_TABLE}(name, applied_at) VALUES (?, now()::text)", [name])
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.Error):
            raise StoreError(f"{where}: cannot open store: {str(exc).strip().splitlines()[0]}") from exc
        raise


def _latest(conn: PgConnection) -> str | None:
    """Return the last memp migration applied to the schema, None when it has none."""
    table = f'"{conn.schema}".{MIGRATIONS_TABLE}'
    row = conn.execute("SELECT to_regclass(?) IS NOT NULL", [table]).fetchone()
    if not row[0]:
        return None
    return conn.execute(f"SELECT max(name) FROM {table}").fetchone()[0]


def _applied(conn: PgConnection) -> list[str]:
    """Return the memp migrations applied to the schema, in order (none when it has no migrations table)."""
    exists = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [conn.schema, MIGRATIONS_TABLE],
    ).fetchone()
    if exists is None:
        return []
    rows = conn.execute(f'SELECT name FROM "{conn.schema}".{MIGRATIONS_TABLE} ORDER BY name').fetchall()
    return [str(r[0]) for r in rows]


def _tables(conn: PgConnection) -> list[str]:
    """Return the tables in the store's schema."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name", [conn.schema]
    ).fetchall()
    return [str(r[0]) for r in rows]
