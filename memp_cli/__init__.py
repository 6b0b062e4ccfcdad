"""memp: procedural memory for LLM agents."""

from __future__ import annotations

__version__ = "0.1.0"

# Importing memp changes nothing in the host program: the store opens its own sqlean connections (memp_cli/store/db.py)
# and sqlite-utils, llm and every other library keep the SQLite module they chose.


def __getattr__(name: str) -> object:
    """Load the Python API on first use, so `memp --help` does not pay for it."""
    if name == "Memp":
        from .api import Memp

        return Memp
    raise AttributeError(f"module 'memp_cli' has no attribute {name!r}")
