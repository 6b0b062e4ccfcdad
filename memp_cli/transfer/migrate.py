"""`memp migrate`: copy a whole store to another backend (SQLite -> PostgreSQL and back), losslessly, resumably.

Every table is copied row by row with its ids (store/copy.py), in batches, each batch landing in the target with
the copy's progress in one transaction: a copy killed at any point runs again from where it stopped, and rows
already in the target are skipped by key. A target that holds memories of another store is refused. The copy is
of the source as it is while it runs: rows changed in the source after they were copied are not copied again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MempError, StoreError
from ..store import Store
from ..store.copy import TABLE_NAMES

BATCH = 2_000


@dataclass
class MigrateReport:
    """What a copy did: rows copied by table, and the target's totals afterwards."""

    source: str
    target: str
    resumed: bool
    copied: dict[str, int] = field(default_factory=dict)
    memories: int = 0
    vectors: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as `memp migrate` prints it."""
        return {"from": self.source, "to": self.target, "resumed": self.resumed, "copied": self.copied,
                "memories": self.memories, "vectors": self.vectors}


def store_name(store: Store) -> str:
    """Return a store's name as copies record it: its absolute file path, or its URL and schema."""
    where = str(store.path)
    return where if "://" in where else str(Path(where).resolve())


def migrate(
    source: Store, target: Store, batch: int = BATCH, say: Callable[[str], None] | None = None
) -> MigrateReport:
    """Copy every row of `source` into `target` (empty, or holding an unfinished copy of `source`)."""
    if batch < 1:
        raise MempError("--batch must be at least 1")
    name, into = store_name(source), store_name(target)
    if name == into:
        raise MempError(f"{into}: --to names the store being copied")
    progress = target.transfer.copy_progress(name)
    if not progress and not target.transfer.is_empty():
        raise StoreError(f"{into}: holds memories of another store; migrate into a new store or an empty schema")
    embed = source.settings.embed_model()
    if embed is not None:
        with target.write():  # checks a target's own model, and shapes PostgreSQL's vector column
            target.settings.claim_embed_model(*embed)
    report = MigrateReport(name, into, resumed=bool(progress))
    for table in TABLE_NAMES:
        after: Any = progress.get(table)
        copied = 0
        while True:
            rows, last = source.transfer.table_rows(table, after, batch)
            if not rows or last is None:
                break
            copied += target.transfer.put_rows(table, rows, last, name, embed)
            after = last
            if len(rows) < batch:
                break
        report.copied[table] = copied
        if say and copied:
            say(f"{table}: {copied} rows copied")
    stats = target.memories.stats()
    report.memories, report.vectors = int(stats["memories"]), target.vectors.count()
    return report
