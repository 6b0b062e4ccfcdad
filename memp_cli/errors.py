"""Named errors; the CLI turns each into a one-line message and an exit status."""

from __future__ import annotations


class MempError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 1


class InputError(MempError):
    """A trajectory file that cannot be read, with the file and line at fault."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class StoreError(MempError):
    """The store cannot be opened, read or written."""


class ModelMismatchError(StoreError):
    """The store was built with another embedding model or dimension."""


class ModelError(MempError):
    """An LLM or embedding model could not be resolved or failed."""


class NotFoundError(MempError):
    """A memory, trajectory or recall id that does not exist."""
