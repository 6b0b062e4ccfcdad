"""The SQLite connection: opening a store file, its pragmas, write transactions and migrating the schema."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError, printable, sqlite_message

BUSY_TIMEOUT_MS = 30_000
DB_FILENAME = "memp.db"
# The newest migration in memp_cli/migrations.py. A store whose last applied migration is this one is up to date,
# which one query tells without importing sqlite-utils (~0.2 s); a test keeps it in step with the migrations.
LATEST_MIGRATION = "m017_lean_runs"


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
    """Return a connection to the store file at `path` (created readable by its owner only), sqlite-vec loaded.

    A file that is not a memp store, an empty SQLite database or an empty file is refused before anything is written
    to it or beside it: no pragma, no journal, no migration touches another program's file.
    """
    import sqlean

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _claim(path)
        conn = sqlean.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlean.DatabaseError as exc:
        raise StoreError(f"{printable(str(path))}: cannot open store: {sqlite_message(exc)}") from exc
    except OSError as exc:
        raise StoreError(f"{printable(str(path))}: cannot create store: {exc.strerror}") from exc
    try:
        _recognise(conn, path)
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
        # Up to 32 MiB of pages kept (SQLite's default is 2 MiB, less than the interior pages of `memory_vectors` at
        # 1M memories: each rescore of a search read them again; 5.3 -> 4.1 ms warm at 1M). Taken only as pages are read.
        conn.execute("PRAGMA cache_size = -32768")
    except sqlean.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{printable(str(path))}: cannot open store: {sqlite_message(exc)}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


SQLITE_HEADER = b"SQLite format 3\x00"


def _claim(path: Path) -> None:
    """Create the store file owner-only, or check that the file there is a regular file memp may use as its store.

    SQLite gives the -wal and -shm files the store's own permissions, so an owner-only store keeps them so too.
    """
    try:
        # The store holds whatever agents saw, secrets included: readable by its owner only.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return
    except FileExistsError:
        pass
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{printable(str(path))}: not a memp store (not a regular file)")
    if info.st_size == 0:
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, 0o600)  # an empty file becomes the store: as private as one memp creates
        return
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(f"{printable(str(path))}: this file is not a memp store (not SQLite, or encrypted)")


def _recognise(conn: Any, path: Path) -> None:
    """Raise StoreError unless the SQLite file is a memp store or holds nothing yet (read only: nothing is written)."""
    objects = [
        (str(kind), str(name)) for kind, name in
        conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                     "ORDER BY type != 'table', name")
    ]
    others = [name if kind == "table" else f"{kind} {name}" for kind, name in objects if name != "_sqlite_migrations"]
    if not others:
        return  # new: an empty database (or one whose first migration has not committed yet)
    if len(others) < len(objects) and _memp_rows(conn):
        return
    what = "tables" if all(kind == "table" for kind, _ in objects) else "objects"
    raise StoreError(f"{printable(str(path))}: not a memp store (it holds other {what}: {', '.join(others[:3])})")


def _memp_rows(conn: Any) -> bool:
    """Return True when the migrations table records a memp migration."""
    return conn.execute("SELECT 1 FROM _sqlite_migrations WHERE migration_set = 'memp' LIMIT 1").fetchone() is not None


@contextmanager
def write(conn: Any) -> Iterator[None]:
    """Run a block as one IMMEDIATE transaction: all of it lands, or none of it. Inside another, it joins that one."""
    if hasattr(conn, "write"):  # PostgreSQL's connection (pg/db.py) runs its own, under the store's write lock
        with conn.write():
            yield
        return
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
    # One process migrates; the others wait on the lock, then find nothing pending. Each migration runs in a
    # savepoint inside this transaction, so a failure leaves no migration half-applied.
    with write(conn):
        # Checked again under the lock (connect checked before any write): another memp may have migrated meanwhile.
        _recognise(conn, path)
        migrations.apply(db)


def scope_filter(column: str, scopes: Sequence[str] | None) -> tuple[str, list[str]]:
    """Return an SQL condition keeping rows whose `column` is one of `scopes` (always true for None), its parameters."""
    if scopes is None:
        return "1 = 1", []
    if not scopes:
        return "0 = 1", []
    return f"{column} IN ({','.join('?' * len(scopes))})", list(scopes)
