"""The SQLite connection: opening a store file, its pragmas, write transactions and migrating the schema."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError, sqlite_message

BUSY_TIMEOUT_MS = 30_000
DB_FILENAME = "memp.db"
# The newest migration in memp_cli/migrations.py. A store whose last applied migration is this one is up to date,
# which one query tells without importing sqlite-utils (~0.2 s); a test keeps it in step with the migrations.
LATEST_MIGRATION = "m014_half_vectors_and_side_bits"


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


def pack(vector: Sequence[float]) -> bytes:
    """Return a float32 blob as sqlite-vec reads it."""
    return struct.pack(f"{len(vector)}f", *vector)


def unpack(blob: bytes) -> list[float]:
    """Return the floats of a float32 blob."""
    return list(struct.unpack(f"{len(blob) // 4}f", blob))


def _vec_extension() -> str:
    """Return the path of sqlite-vec's loadable extension, without importing its Python module (which loads numpy)."""
    import importlib.util

    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("sqlite-vec is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), "vec0")


def connect(path: Path) -> Any:
    """Return a connection to the store file at `path` (created readable by its owner only), sqlite-vec loaded."""
    import sqlean

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # The store holds whatever agents saw, secrets included: readable by its owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlean.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
        conn.enable_load_extension(True)
        conn.load_extension(_vec_extension())
        conn.enable_load_extension(False)
        # Rows are read by column name (Memory.from_row, Trajectory.from_row) and still index like tuples.
        conn.row_factory = sqlean.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL still survives any crash of memp consistently; it skips the fsync on every commit
        # (the last commits may be lost only if the machine itself loses power).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlean.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open store: {sqlite_message(exc)}") from exc
    except OSError as exc:
        raise StoreError(f"{path}: cannot create store: {exc.strerror}") from exc
    return conn


@contextmanager
def write(conn: Any) -> Iterator[None]:
    """Run a block as one IMMEDIATE transaction: all of it lands, or none of it. Inside another, it joins that one."""
    if conn.in_transaction:
        # The parts of a store write through each other (a memory with its vector): one transaction for all.
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _last_migration(conn: Any) -> str | None:
    """Return the name of the last memp migration applied to the store, None when there is none."""
    import sqlean

    try:
        row = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'memp' ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
    except sqlean.OperationalError:  # no migrations table: a new file, or another program's
        return None
    return str(row[0]) if row else None


def migrate(conn: Any, path: Path) -> None:
    """Bring the schema up to date under the write lock, refusing stores that are not memp's or are newer."""
    import sqlean

    try:
        if _last_migration(conn) == LATEST_MIGRATION:
            return
        _migrate_slowly(conn, path)
    except sqlean.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open store: {sqlite_message(exc)}") from exc


def _migrate_slowly(conn: Any, path: Path) -> None:
    """Apply the pending migrations, having checked that the store is memp's and not from a newer memp."""
    import sqlite_utils

    from ..migrations import migrations

    # sqlite-utils is handed memp's sqlean connection as it is. Its `except sqlite3.OperationalError` clauses do not
    # catch sqlean's errors, so migrations say what they tolerate in SQL (IF EXISTS) instead of alter=True or
    # drop(ignore=True); tests/test_api.py keeps them to that.
    db = sqlite_utils.Database(conn)
    applied = [m.name for m in migrations.applied(db)]
    # Every migration this memp knows is pending in an empty database.
    known = {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}
    newer = [name for name in applied if name not in known]
    if newer:
        raise StoreError(f"{path}: written by a newer memp (schema change {newer[-1]}); upgrade memp to open it")
    if not migrations.pending(db):
        return
    others = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if not r[0].startswith(("_sqlite", "sqlite_"))
    ]
    if not applied and others:
        raise StoreError(f"{path}: not a memp store (it holds other tables: {', '.join(others[:3])})")
    # One process migrates; the others wait on the lock, then find nothing pending. Each migration runs in a
    # savepoint inside this transaction, so a failure leaves no migration half-applied.
    with write(conn):
        migrations.apply(db)
