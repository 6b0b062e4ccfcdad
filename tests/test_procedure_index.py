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


def _members(index: ProcedureIndex) -> Any:
    """Return everything an index holds, with keys by text (their numbering is the order they were first met)."""
    ids, entries, keys, idf, word_idf = _contents(index)
    return ids, entries, keys, idf, word_idf, index.df, index.word_df, [int(t) for t in index.tids]


def test_an_index_built_in_small_pages_equals_one_built_in_big_ones(memp, isolated: Path, monkeypatch) -> None:
    from memp_cli import procedure_index_build

    memp("ingest", str(EXAMPLES))
    rows = [traj(f"{verb} the {thing} in room {i}", actions=(f"go to {thing} {i}", f"{verb} {thing} {i}"))
            for i, (verb, thing) in enumerate((v, t) for v in ("clean", "heat", "cool") for t in ("mug", "lamp"))]
    memp("ingest", str(write_jsonl(isolated / "more.jsonl", rows)), "--build", "trajectory")
    store: Any = open_store(isolated / "memp.db")
    embedder = OnnxEmbedder()
    state = index_for(store, embedder, "memp-minilm").state
    big = ProcedureIndex()
    big.refresh(store, embedder, state)
    monkeypatch.setattr(procedure_index_build, "PAGE", 2)
    monkeypatch.setattr(procedure_index_build, "EMBED_BATCH", 1)
    small = ProcedureIndex()
    small.refresh(store, embedder, state, path=isolated / "small-procedures.npz")
    assert len(big.ids) == len(small.ids) > 10
    assert _members(small) == _members(big)
    reloaded = ProcedureIndex.load(isolated / "small-procedures.npz")
    assert reloaded is not None and _members(reloaded) == _members(big)


def test_a_change_of_status_reads_only_the_memories_it_does_not_hold(memp, isolated: Path, monkeypatch) -> None:
    memp("ingest", str(EXAMPLES))
    store: Any = open_store(isolated / "memp.db")
    embedder = OnnxEmbedder()
    before = index_for(store, embedder, "memp-minilm")
    retired, *_ = (int(i) for i in before.ids)
    store.memories.retire(retired, "test")
    procedure_index._indexes.clear()
    read: list[int] = []
    original = type(store.memories).index_rows
    monkeypatch.setattr(type(store.memories), "index_rows",
                        lambda self, ids: read.extend(ids) or original(self, ids))
    after = index_for(store, embedder, "memp-minilm")
    assert read == [] and retired not in {int(i) for i in after.ids} and len(after.ids) == len(before.ids) - 1
    monkeypatch.undo()
    fresh = ProcedureIndex()
    fresh.refresh(store, embedder, after.state)
    assert _members(after) == _members(fresh)


def test_a_deleted_torn_or_stale_side_file_is_rebuilt(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES))
    store: Any = open_store(isolated / "memp.db")
    embedder = OnnxEmbedder()
    good = _members(index_for(store, embedder, "memp-minilm"))
    path = index_path(store)
    whole = path.read_bytes()

    def again() -> Any:
        procedure_index._indexes.clear()
        return index_for(store, embedder, "memp-minilm")

    path.unlink()
    assert _members(again()) == good and path.exists()
    for torn in (whole[: len(whole) // 2], whole[:-100], b"not an index", whole[:64] + bytes(len(whole) - 64)):
        path.write_bytes(torn)
        assert ProcedureIndex.load(path) is None
        assert _members(again()) == good and ProcedureIndex.load(path) is not None
    # Stale: the file says it was built for another state of the store (here, fewer memories than are active).
    stale = ProcedureIndex.load(path)
    assert stale is not None
    stale.state = (*stale.state[:-2], int(stale.state[-2]) - 1, int(stale.state[-1]))
    stale.save(path)
    rebuilt = again()
    assert _members(rebuilt) == good and rebuilt.state != stale.state


def test_an_index_that_cannot_be_written_beside_the_store_is_held_by_the_process(memp, isolated: Path,
                                                                                  monkeypatch) -> None:
    from memp_cli import procedure_index_file

    memp("ingest", str(EXAMPLES))
    store: Any = open_store(isolated / "memp.db")
    embedder = OnnxEmbedder()
    good = _members(index_for(store, embedder, "memp-minilm"))
    index_path(store).unlink()
    real = procedure_index_file.open_private

    def full(path: Path) -> Any:
        if path.parent == isolated:
            raise OSError(28, "No space left on device")
        return real(path)

    monkeypatch.setattr(procedure_index_file, "open_private", full)
    procedure_index._indexes.clear()
    assert _members(index_for(store, embedder, "memp-minilm")) == good
    assert not index_path(store).exists() and not list(isolated.glob("*.tmp"))
