"""Bulk ingest into PostgreSQL: each write one pipelined transaction (all of it or none), the HNSW index built once at
the end of a bulk ingest, and what is stored the same as SQLite stores from the same input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, SHARED, traj, write_jsonl

from memp_cli.ingest import IngestOptions, ingest
from memp_cli.store import open_store


def _runs(path: Path, count: int) -> Path:
    """Write `count` distinct native-format runs to one JSONL file and return it."""
    return write_jsonl(path, [traj(f"put apple {i} in fridge {i % 5}", actions=("go to fridge 1", f"open door {i}"))
                              for i in range(count)])


def _ingest(inputs: list[str], db: Any = None) -> dict[str, Any]:
    store = open_store(db)
    try:
        return ingest(store, inputs, IngestOptions(model="offline")).to_dict()
    finally:
        store.close()


def test_a_bulk_ingest_builds_the_hnsw_index_once_at_its_end(pg, tmp_path: Path, monkeypatch) -> None:
    import memp_cli.store.pg.vectors as pgvec

    monkeypatch.setattr(pgvec, "HNSW_ABOVE", 50)
    built: list[int] = []
    real = pgvec.PgVectors.build_index

    def counted(self: Any) -> None:
        built.append(self.count())
        real(self)

    monkeypatch.setattr(pgvec.PgVectors, "build_index", counted)
    report = _ingest([str(_runs(tmp_path / "runs.jsonl", 200))])
    assert report["added"] == 200
    assert built == [200]  # not at the batch that crossed 50, when 128 were stored: once, over all of them
    store = open_store()
    assert store.vectors.indexed()  # type: ignore[attr-defined]
    # A later write past the threshold, the index there already, inserts into it as before.
    _ingest([str(_runs(tmp_path / "more.jsonl", 70))])
    assert built == [200]


@pytest.mark.parametrize("where", ["client", "server"])
def test_a_batch_failing_half_way_on_postgresql_stores_nothing(pg, tmp_path: Path, monkeypatch, where) -> None:
    from memp_cli.store import memories

    calls = {"n": 0}
    real = memories.SqliteMemories._history

    def failing(self: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        real(self, *args, **kwargs)
        if calls["n"] == 30:  # half way through the first batch, statements already sent down the pipeline
            if where == "client":
                raise RuntimeError("the process failed half way")
            self._conn.execute("SELECT 1 / (? - 30)", [calls["n"]])  # the server refuses this one

    monkeypatch.setattr(memories.SqliteMemories, "_history", failing)
    with pytest.raises(Exception, match="half way|division by zero"):
        _ingest([str(_runs(tmp_path / "runs.jsonl", 100))])
    store = open_store()
    counts = [store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[attr-defined]
              for t in ("trajectories", "memories", "memory_vectors", "memory_history", "script_cache")]
    assert counts == [0, 0, 0, 0, 0]
    monkeypatch.setattr(memories.SqliteMemories, "_history", real)
    assert _ingest([str(tmp_path / "runs.jsonl")])["added"] == 100  # and a re-run stores it all


def _memories(store: Any) -> list[tuple[Any, ...]]:
    return sorted((m.trajectory_id, m.task, m.script, m.trajectory, m.tokens, m.flag, m.status, m.model,
                   m.prompt_version, m.build, m.outcome, m.source_file, m.source_line) for m in store.memories.list())


def test_postgresql_stores_what_sqlite_stores_from_the_same_input(pg, tmp_path: Path) -> None:
    import numpy as np

    inputs = [str(EXAMPLES), str(_runs(tmp_path / "runs.jsonl", 150))]
    if SHARED.exists():
        inputs += [str(p) for p in sorted((SHARED / "alfworld-expert").rglob("gt_traj.json"))[:60]]
    on_sqlite = _ingest(inputs, tmp_path / "store.db")
    on_pg = _ingest(inputs)
    assert on_pg == on_sqlite and on_pg["added"] > 150
    lite, pgs = open_store(tmp_path / "store.db"), open_store()
    assert _memories(pgs) == _memories(lite)
    by_run = {m.trajectory_id: m.id for m in lite.memories.list()}
    for m in pgs.memories.list():
        # PostgreSQL holds float32, SQLite float16: the same vectors to float16's precision.
        assert np.allclose(pgs.vectors.vector(m.id), lite.vectors.vector(by_run[m.trajectory_id]), atol=1e-3)
