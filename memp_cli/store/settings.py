"""Store settings and the record of which embedding model built the store, in the `meta` table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelMismatchError
from .db import write


class SqliteSettings:
    """Settings (`setting:` keys) and the embedding model (`embed_model`, `embed_dim`) of one SQLite store."""

    def __init__(self, conn: Any, path: Path | str) -> None:
        self._conn = conn
        self._path = path
        self._embed: tuple[str, int] | None = None

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def get(self, key: str) -> str | None:
        """Return a store setting, None when unset."""
        return self._meta(f"setting:{key}")

    def set(self, key: str, value: str) -> None:
        """Store a setting."""
        with write(self._conn):
            self._put(f"setting:{key}", value)

    def _put(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    def embed_model(self) -> tuple[str, int] | None:
        """Return the (model id, dimensions) the store's vectors were built with, if any."""
        if self._embed is None:
            model, dim = self._meta("embed_model"), self._meta("embed_dim")
            if model is None or dim is None:
                return None
            self._embed = (model, int(dim))  # set once per store, never changed: safe to keep
        return self._embed

    def check_embed_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise ModelMismatchError unless vectors from `model_id` (of `dim`) may go into this store."""
        current = self.embed_model()
        if current is None:
            return
        stored_model, stored_dim = current
        if stored_model != model_id or (dim is not None and dim != stored_dim):
            got = f"{model_id}" + (f" ({dim} dimensions)" if dim is not None else "")
            raise ModelMismatchError(
                f"{self._path}: store was built with embedding model {stored_model} ({stored_dim} dimensions), "
                f"not {got}; use --embed-model {stored_model} or a new --db"
            )

    def claim_embed_model(self, model_id: str, dim: int) -> None:
        """Record `model_id` as the store's embedding model unless one is recorded, else check it (inside a write)."""
        self.check_embed_model(model_id, dim)
        if self.embed_model() is None:
            self._put("embed_model", model_id)
            self._put("embed_dim", str(dim))
