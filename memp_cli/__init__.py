"""memp: procedural memory for LLM agents."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _prefer_sqlean() -> None:
    """Make sqlite-utils (and llm, which uses it) open connections with sqlean.py.

    Many Python builds (pyenv's, macOS's system Python) cannot load extensions into the standard sqlite3, and
    sqlite-vec is an extension. sqlite-utils already prefers `pysqlite3`; aliasing sqlean under that name before the
    first `import sqlite_utils` keeps its error handling consistent with the connections it is handed.
    """
    if "sqlite_utils" in sys.modules or "pysqlite3" in sys.modules:
        return
    try:
        import sqlean
    except ImportError:  # pragma: no cover - sqlean.py is a dependency; stdlib sqlite3 may still do
        return
    sys.modules["pysqlite3"] = sqlean
    sys.modules["pysqlite3.dbapi2"] = sqlean.dbapi2


_prefer_sqlean()


def __getattr__(name: str) -> object:
    """Load the Python API on first use, so `memp --help` does not pay for it."""
    if name == "Memp":
        from .api import Memp

        return Memp
    raise AttributeError(f"module 'memp_cli' has no attribute {name!r}")
