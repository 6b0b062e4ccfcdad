"""Named errors; the CLI turns each into a one-line message and an exit status."""

from __future__ import annotations


class MempError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 1


def printable(text: str) -> str:
    """Return text fit for one line of a message: control characters escaped, undecodable bytes as \\xNN."""
    if text.isprintable():
        return text
    # A file name may hold bytes that are not UTF-8 (Python keeps them as lone surrogates) and newlines: neither may
    # reach the terminal or the store as they are.
    return "".join(_printable_char(c) for c in text)


def _printable_char(c: str) -> str:
    if c.isprintable():
        return c
    if "\udc80" <= c <= "\udcff":
        return f"\\x{ord(c) - 0xDC00:02x}"
    if "\ud800" <= c <= "\udfff":
        return f"\\u{ord(c):04x}"
    return c.encode("unicode_escape").decode("ascii")


class InputError(MempError):
    """A trajectory file that cannot be read, with the file and line at fault."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = printable(path)
        self.line = line
        self.message = printable(message)
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {self.message}")


class StoreError(MempError):
    """The store cannot be opened, read or written."""


class ConflictError(StoreError):
    """A write based on a version of a memory that another process changed meanwhile (compare-and-set failed)."""


class ModelMismatchError(StoreError):
    """The store was built with another embedding model or dimension."""


class SchemaError(MempError):
    """A PostgreSQL schema name that is not one (bad usage, as a mistyped option is)."""

    exit_code = 2


class ModelError(MempError):
    """An LLM or embedding model could not be resolved or failed."""


class MalformedAnswer(ModelError):
    """A model answered, asked twice, with something that could not be parsed into what was asked for."""


class ScopeError(MempError):
    """A scope name that is not one (bad usage, as a mistyped option is)."""

    exit_code = 2


class NotFoundError(MempError):
    """A memory, trajectory or recall id that does not exist."""


def sqlite_message(exc: BaseException) -> str | None:
    """Return a one-line explanation when `exc` is an SQLite (or PostgreSQL) error, else None."""
    if type(exc).__module__.startswith("psycopg"):
        return f"store error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    if not type(exc).__module__.startswith(("sqlean", "sqlite3", "pysqlite3")):
        return None
    text = str(exc)
    hints = {
        "readonly": "the store is read-only here; use a writable --db",
        "disk is full": "the disk is full; nothing from this command was written",
        "database is locked": "the store stayed locked by another process for too long; try again",
        "not a database": "this file is not a memp store (not SQLite, or encrypted)",
        "malformed": "the store file is corrupt; restore a backup or start a new --db",
        "unable to open": "the store cannot be opened at this path",
    }
    for needle, hint in hints.items():
        if needle in text:
            return f"{hint} ({text})"
    return f"store error: {text}"
