"""Dedupe on real ALFWorld runs merges copies of one procedure, never two task types."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED

ALFWORLD = SHARED / "alfworld-expert" / "train"


@pytest.mark.skipif(not ALFWORLD.exists(), reason=f"real data folder {ALFWORLD} is absent")
def test_dedupe_merges_no_two_task_types(tmp_path: Path) -> None:
    from memp_cli.ingest import IngestOptions, ingest
    from memp_cli.prune import Rules, plan_store
    from memp_cli.store import open_store

    # Every task type, with the "heat/cool/clean some X and put it in Y" tasks that read alike across types.
    folders = sorted(p for p in ALFWORLD.iterdir() if p.is_dir())[::6]
    store = open_store(tmp_path / "alf.db")
    ingest(store, [str(p) for p in folders], IngestOptions(model="offline"))
    plan, _ = plan_store(store, Rules(discard=False, dedupe=0.95))
    memories = {m.id: m for m in store.memories.list()}
    assert len({m.metadata["task_type"] for m in memories.values()}) == 6
    assert plan, "no duplicate at all: the test would prove nothing"
    crossed = [(r.memory_id, r.merge_into) for r in plan
               if memories[r.memory_id].metadata["task_type"] != memories[r.merge_into].metadata["task_type"]]
    assert crossed == []
    assert all(r.task_similarity is not None and r.task_similarity >= 0.95 for r in plan)
    assert all(r.procedure_similarity is not None and r.procedure_similarity >= 0.9 for r in plan)
    # Nothing merged chains: a memory that absorbed others is itself kept.
    assert not {r.merge_into for r in plan} & {r.memory_id for r in plan}
