"""What differs between the SQL engines where the shared modules' standard SQL cannot say it one way for both.

The shared modules (memories, log, settings, keywords, transfer) write SQL that SQLite and PostgreSQL both run:
`?` placeholders (pg/db.py passes them on as `%s`), `ON CONFLICT ... DO NOTHING / DO UPDATE`, `RETURNING id`,
`IS NOT DISTINCT FROM`. The few spellings that differ are here, one object per engine, read from the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """The spellings of one SQL engine."""

    name: str
    # A text field of a JSON text column, formatted with (column, key).
    json_field: str
    # How many dimensions the vector in a column has, formatted with (column).
    vector_dims: str

    def dims(self, column: str) -> str:
        """Return SQL giving the number of dimensions of the task vector in `column`."""
        return self.vector_dims.format(column=column)

    def json_text(self, column: str, key: str) -> str:
        """Return SQL reading `key` of the JSON text in `column` as text."""
        return self.json_field.format(column=column, key=key)


# SQLite stores float16 blobs (vectors.py), two bytes a dimension.
SQLITE = Dialect("sqlite", "json_extract({column}, '$.{key}')", "length({column}) / 2.0")
POSTGRES = Dialect("postgresql", "({column}::jsonb ->> '{key}')", "vector_dims({column})")
# Where SQL asks for every row from an OFFSET: SQLite takes no OFFSET without a LIMIT, PostgreSQL no negative LIMIT.
NO_LIMIT = 2**63 - 1


def dialect(conn: Any) -> Dialect:
    """Return the dialect of a connection: PostgreSQL's wrapper says so, a SQLite connection is SQLite's."""
    return getattr(conn, "dialect", SQLITE)
