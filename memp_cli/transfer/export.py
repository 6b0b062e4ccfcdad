"""`memp export`: a store's memories, with everything about them, as the export format's JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..store import Store
from .format import FORMAT, VERSION, encode_vector, memory_line


@dataclass
class Filters:
    """Which memories an export holds: by status, outcome of their run, build policy, task type, age and scope."""

    status: str | None = None
    outcome: str | None = None
    build: str | None = None
    task_type: str | None = None
    since: str | None = None
    scopes: list[str] | None = field(default=None)  # None: every scope

    def active(self) -> dict[str, str]:
        """Return the filters that are set, by name (the scopes as one comma-separated "scope")."""
        found = {k: v for k, v in asdict(self).items() if v is not None and k != "scopes"}
        if self.scopes is not None:
            found["scope"] = ",".join(self.scopes)
        return found


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def export(store: Store, write: Callable[[str], Any], filters: Filters | None = None,
           vectors: bool = False) -> dict[str, int]:
    """Write the store's memories (filtered) in the export format through `write`; return what was written."""
    filters = filters or Filters()
    embed = store.settings.embed_model()
    with_vectors = vectors and embed is not None
    header: dict[str, Any] = {
        "type": "header", "format": FORMAT, "version": VERSION, "memp_version": __version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embed_model": {"id": embed[0], "dim": embed[1]} if embed else None,
        "vectors": with_vectors, "filters": filters.active(), "settings": store.transfer.settings(),
    }
    write(_line(header))
    exported: set[str] = set()
    words: set[str] = set()
    plain = {k: v for k, v in filters.active().items() if k != "scope"}
    for row in store.transfer.memory_rows(**plain, vectors=with_vectors, scopes=filters.scopes):
        line = memory_line(row)
        exported.add(line["trajectory_id"])
        words.update(line["keywords"])
        write(_line(line))
    keywords = 0
    if with_vectors:
        blobs = store.transfer.keyword_vectors(sorted(words))
        for word in sorted(blobs):
            write(_line({"type": "keyword", "word": word, "vector": encode_vector(blobs[word])}))
            keywords += 1
    outcomes = store.transfer.outcome_rows(exported)
    for outcome in outcomes:
        write(_line({"type": "outcome", **outcome, "applied": bool(outcome["applied"])}))
    counts = {"memories": len(exported), "keywords": keywords, "outcomes": len(outcomes)}
    write(_line({"type": "end", **counts}))
    return counts
