"""The procedure index grows with the store: added memories are appended, and it equals one built from scratch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from conftest import EXAMPLES, traj, write_jsonl

from memp_cli import procedure_index
from memp_cli.embed import OnnxEmbedder
from memp_cli.procedure_index import ProcedureIndex, index_for, index_path
from memp_cli.store import open_store


def _contents(index: ProcedureIndex) -> Any:
    ids = [int(i) for i in index.ids]
    texts = index.key_texts()
    entries = [dataclasses.replace(e, key=0) for i in ids if (e := index.entry(i)) is not None]
    return ids, entries, [texts[k] for k in index.key_of], index.idf, index.word_idf


def test_memories_added_later_are_appended_and_the_index_equals_a_fresh_one(memp, isolated: Path, monkeypatch) -> None:
    memp("ingest", str(EXAMPLES))
    store: Any = open_store(isolated / "memp.db")
    embedder = OnnxEmbedder()
    first = index_for(store, embedder, "memp-minilm")
    indexed = len(first.ids)
    rows = [traj(f"{verb} the {thing} in room {i}", actions=(f"go to {thing} {i}", f"{verb} {thing} {i}"))
            for i, (verb, thing) in enumerate((v, t) for v in ("clean", "heat") for t in ("mug", "lamp", "desk"))]
    memp("ingest", str(write_jsonl(isolated / "more.jsonl", rows)), "--build", "trajectory")

    # A fresh process: the saved index is mapped, and the six new memories are appended (nothing else rebuilt).
    procedure_index._indexes.clear()
    rebuilt: list[int] = []
    monkeypatch.setattr(ProcedureIndex, "_rebuild", lambda self, *a: rebuilt.append(1))
    grown = index_for(store, embedder, "memp-minilm")
    assert not rebuilt and len(grown.ids) == indexed + 6
    monkeypatch.undo()
    fresh = ProcedureIndex()
    fresh.refresh(store, embedder, grown.state)
    assert _contents(grown) == _contents(fresh)
    loaded = ProcedureIndex.load(index_path(store))
    assert loaded is not None and _contents(loaded) == _contents(fresh)

    # A retirement is not an addition: the index is read again, without the retired memory.
    store.memories.retire(int(grown.ids[0]), "test")
    procedure_index._indexes.clear()
    after = index_for(store, embedder, "memp-minilm")
    assert int(grown.ids[0]) not in {int(i) for i in after.ids} and len(after.ids) == indexed + 5
