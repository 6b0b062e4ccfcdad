"""AveFact's keywords (each word once with its vector, and which memory has which) and the FTS5 full-text index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .db import pack, scope_filter, write

# The counters in `meta` (kept by triggers: migrations.m016_row_counters) and what each counts.
COUNTED = {
    "memory_keywords": "SELECT count(*) FROM memory_keywords",
    "active_memories": "SELECT count(*) FROM memories WHERE status = 'active'",
}


def _counter(key: str) -> str:
    """Return SQL reading one counter of `meta` as an integer (NULL where the store has none)."""
    return f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{key}')"


class SqliteKeywords:
    """The `keywords`, `memory_keywords` and `memories_fts` tables of one SQLite store."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def missing(self) -> list[tuple[int, str]]:
        """Return (memory id, task) of memories whose keywords were not extracted yet."""
        rows = self._conn.execute(
            "SELECT id, task FROM memories m WHERE NOT EXISTS "
            "(SELECT 1 FROM memory_keywords k WHERE k.memory_id = m.id) ORDER BY id"
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def reset(self) -> None:
        """Forget which memory has which keywords (another extractor will fill them in again)."""
        with write(self._conn):
            self._conn.execute("DELETE FROM memory_keywords")

    def known(self, words: Sequence[str]) -> set[str]:
        """Return which of `words` have a stored vector."""
        found: set[str] = set()
        # In chunks: one bound parameter a word.
        for start in range(0, len(words), 500):
            chunk = list(words[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._conn.execute(f"SELECT word FROM keywords WHERE word IN ({marks})", chunk))
        return found

    def add(self, vectors: dict[str, list[float]], links: Sequence[tuple[int, list[str]]]) -> None:
        """Store keyword vectors and which memory has which keywords, in one transaction."""
        with write(self._conn):
            self._conn.executemany(
                "INSERT INTO keywords(word, embedding) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(word, pack(vector)) for word, vector in vectors.items()],
            )
            self._conn.executemany(
                "INSERT INTO memory_keywords(memory_id, keyword_id) "
                "SELECT ?, id FROM keywords WHERE word = ? ON CONFLICT DO NOTHING",
                [(memory_id, word) for memory_id, words in links for word in dict.fromkeys(words)],
            )

    def state(self) -> tuple[int, ...]:
        """Return numbers that change whenever keywords, memberships or memory statuses change: the largest keyword
        id, the memberships, the active memories and the largest memory id."""
        # The two counts are counters in `meta`, kept by the triggers of migration m016 (counting the active
        # memories took ~70 ms of every fresh recall at 1M); the largest ids are one index step each.
        row = self._conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM keywords), "
            f"coalesce({_counter('memory_keywords')}, ({COUNTED['memory_keywords']})), "
            f"coalesce({_counter('active_memories')}, ({COUNTED['active_memories']})), "
            "(SELECT coalesce(max(id), 0) FROM memories)"
        ).fetchone()
        return tuple(int(v) for v in row)

    def counter_problems(self) -> list[str]:
        """Return a line for each counter in `meta` that disagrees with the rows it counts (none when all agree)."""
        problems = []
        for key, real in COUNTED.items():
            row = self._conn.execute(f"SELECT {_counter(key)}, ({real})").fetchone()
            if row[0] is not None and int(row[0]) != int(row[1]):
                problems.append(f"meta counter {key} says {int(row[0])}, the store holds {int(row[1])}")
        return problems

    def index(
        self, scopes: Sequence[str] | None = None
    ) -> tuple[list[int], list[list[int]], list[str], list[bytes]]:
        """Return active memory ids (of `scopes`), each one's keyword positions, and the keywords with their blobs."""
        words: list[str] = []
        blobs: list[bytes] = []
        position: dict[int, int] = {}
        for kid, word, blob in self._conn.execute("SELECT id, word, embedding FROM keywords ORDER BY id"):
            position[kid] = len(words)
            words.append(word)
            blobs.append(blob)
        members: dict[int, list[int]] = {}
        scoped, scope_params = scope_filter("m.scope", scopes)
        for memory_id, kid in self._conn.execute(
            "SELECT k.memory_id, k.keyword_id FROM memory_keywords k JOIN memories m ON m.id = k.memory_id "
            f"WHERE m.status = 'active' AND {scoped} ORDER BY k.memory_id", scope_params
        ):
            members.setdefault(int(memory_id), []).append(position[kid])
        ids = list(members)
        return ids, [members[i] for i in ids], words, blobs

    def full_text(
        self, terms: Sequence[str], n: int, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, BM25 score, higher is better) of up to `n` active memories of `scopes` matching `terms`."""
        if not terms:
            return []
        # Each term quoted: FTS5 would read a bare word such as "or" or "near" as an operator.
        scoped, scope_params = scope_filter("m.scope", scopes)
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self._conn.execute(
            "SELECT f.rowid, -bm25(memories_fts) AS score FROM memories_fts f JOIN memories m ON m.id = f.rowid "
            f"WHERE memories_fts MATCH ? AND m.status = 'active' AND {scoped} ORDER BY bm25(memories_fts) LIMIT ?",
            [query, *scope_params, n],
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]
