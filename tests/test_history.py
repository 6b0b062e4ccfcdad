"""A memory's history without copies of its text: version 1 and status rows read back whole on every path (history,
revert, export, import, check), and m015/p003 slim a store written by the release before them without losing a text."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES

from memp_cli.records import Script
from memp_cli.store import open_store
from memp_cli.store.history import TEXT_COLUMNS, TEXTLESS_EVENTS, fill, slim, stored
from memp_cli.store.runs import steps_text

pytestmark = pytest.mark.usefixtures("backend")

HISTORY_SQL = "SELECT * FROM memory_history ORDER BY id"


def _texts(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in TEXT_COLUMNS)


def _raw(store: Any, sql: str = HISTORY_SQL) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in store.db.execute(sql).fetchall()]


def _lived(memp: Any) -> tuple[Any, tuple[str | None, str | None]]:
    """Return a store of the bundled runs whose memory 1 was revised twice, retired, restored and reverted to v1,
    and memory 1's text as built."""
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "offline")
    store = open_store()
    built = store.memories.get(1)
    return store, (built.script, built.trajectory)


def test_version_one_reads_back_whole_after_revisions_and_a_revert(memp) -> None:
    store, v1 = _lived(memp)
    first = v1[0]
    assert first is not None

    def version_one() -> tuple[str | None, str | None]:
        row = store.memories.history(1)[0]
        assert row["event"] == "built" and row["old_script"] is None and row["old_trajectory"] is None
        assert store.memories.version_content(1, 1)[:2] == (row["new_script"], row["new_trajectory"])
        return row["new_script"], row["new_trajectory"]

    # 0 revisions: the row copies nothing; the memory's own text is version 1's.
    assert version_one() == v1
    assert _raw(store, "SELECT old_script, new_script, old_trajectory, new_trajectory FROM memory_history") == [
        (None, None, None, None)
    ] * 5
    # 1 revision: version 1's text is the revision's old text.
    store.memories.revise(1, first + "\n- revised once", v1[1], "offline", "p", 10, "revised", "first")
    assert version_one() == v1
    # 2 revisions, the second changing the trajectory too, with a retirement and a restore between them.
    store.memories.retire(1, "out for a while")
    store.memories.restore(1)
    store.memories.revise(1, first + "\n- revised twice", "Task: another text", "offline", "p", 12, "revised", "second")
    assert version_one() == v1
    history = store.memories.history(1)
    assert [h["event"] for h in history] == ["built", "revised", "retired", "restored", "revised"]
    assert _texts(history[1]) == (first, first + "\n- revised once", v1[1], v1[1])
    for status in history[2:4]:  # a change of status stands for its version's text, old and new
        assert _texts(status) == (first + "\n- revised once",) * 2 + (v1[1],) * 2
    assert _texts(history[4]) == (first + "\n- revised once", first + "\n- revised twice", v1[1], "Task: another text")
    # Only the revisions hold texts.
    holding = [r for r in stored(store.db, 1)[0] if any(_texts(r))]
    assert [r["event"] for r in holding] == ["revised", "revised"]
    # Reverted to v1: the memory holds version 1's text again, as a new version recording old and new.
    store.close()
    memp("revert", "1", "--to", "1")
    store = open_store()
    memory = store.memories.get(1)
    assert (memory.script, memory.trajectory) == v1 and memory.version == 4
    assert version_one() == v1
    last = store.memories.history(1)[-1]
    assert last["event"] == "reverted" and _texts(last) == (first + "\n- revised twice", first, "Task: another text",
                                                             v1[1])
    assert [h["new_script"] for h in memp.json("history", "1")["history"]] == [
        first, first + "\n- revised once", first + "\n- revised once", first + "\n- revised once",
        first + "\n- revised twice", first,
    ]
    report = store.check()
    assert report["ok"], report["problems"]


def test_export_and_import_carry_every_text_and_store_none_twice(memp, tmp_path: Path) -> None:
    store, v1 = _lived(memp)
    store.memories.revise(1, "Steps:\n1. revised", v1[1], "offline", "p", 10, "revised", "test")
    store.memories.retire(2, "retired by the test")
    exported = tmp_path / "out.jsonl"
    memp("export", "-o", str(exported))
    records = {r["memory_id"]: r for r in map(json.loads, exported.read_text().splitlines()) if r["type"] == "memory"}
    assert records[1]["history"] == store.memories.history(1)
    assert records[1]["history"][0]["new_script"] == v1[0]
    assert records[2]["history"][-1]["event"] == "retired" and records[2]["history"][-1]["new_script"] is not None
    target = tmp_path / "b.db"
    memp("import", str(exported), "--db", str(target))
    copy = open_store(target)
    by_run = {m.trajectory_id: m.id for m in copy.memories.list()}
    for record in records.values():
        assert copy.memories.history(by_run[record["trajectory_id"]]) == record["history"]
    # The import stored what memp writes: texts in the revisions only.
    assert {r[0] for r in copy.db.execute("SELECT event FROM memory_history WHERE new_script IS NOT NULL")} == {
        "revised"
    }
    assert copy.check()["ok"]


def _as_released_before_slimming(store: Any) -> None:
    """Write the store's history back as memp wrote it before m015/p003 (every row with its texts), with the
    offline scripts cached as that release cached them, and mark the slimming migration not applied."""
    ids = [int(r[0]) for r in store.db.execute("SELECT id FROM memories ORDER BY id")]
    with store.write():
        for memory_id in ids:
            history_ids = [int(r[0]) for r in store.db.execute(
                "SELECT id FROM memory_history WHERE memory_id = ? ORDER BY id", [memory_id]
            )]
            for row_id, row in zip(history_ids, store.memories.history(memory_id)):
                store.db.execute(
                    "UPDATE memory_history SET old_script = ?, new_script = ?, old_trajectory = ?, "
                    "new_trajectory = ? WHERE id = ?", [*_texts(row), row_id],
                )
        store.db.execute(
            "INSERT INTO script_cache(trajectory_id, model, prompt_version, script, created_at) "
            "SELECT trajectory_id, 'offline', 'offline-v2', script, created_at FROM memories WHERE model = 'offline'"
        )
        pg = hasattr(store.db, "dialect")
        # The memories' texts of their runs in full and (SQLite) the steps as JSON text, as memp wrote them then.
        for memory in store.memories.list():
            if memory.stored_trajectory is None or (memory.stored_trajectory == "" and not pg):
                store.db.execute("UPDATE memories SET trajectory = ? WHERE id = ?", [memory.trajectory, memory.id])
        if not pg:
            for trajectory_id, steps in store.db.execute("SELECT id, steps FROM trajectories").fetchall():
                store.db.execute("UPDATE trajectories SET steps = ? WHERE id = ?", [steps_text(steps), trajectory_id])
        if pg:
            store.db.execute("DELETE FROM memp_migrations WHERE name >= 'p003_history_and_cache_without_copies'")
        else:
            # The migrations after it are marked not applied too: that release had none of them.
            store.db.execute("DELETE FROM _sqlite_migrations WHERE name >= 'm015_history_and_cache_without_copies'")


def test_the_slimming_migration_converts_an_older_store_losslessly(memp) -> None:
    store, v1 = _lived(memp)
    store.memories.revise(1, "Steps:\n1. revised", v1[1], "offline", "p", 10, "revised", "test")
    store.memories.retire(1, "out")
    store.memories.restore(1)
    store.memories.revise(1, "Steps:\n1. again", None, "offline", "p", 10, "revised", "again")
    store.memories.retire(2, "merged by the test", merged_into=3)
    run = store.memories.get(4).trajectory_id
    store.memories.set_script(4, run, Script("Steps:\n1. from a model", "fake-chat", "distill-v1", 100, 20), 8)
    ids = [int(r[0]) for r in store.db.execute("SELECT id FROM memories ORDER BY id")]
    slim_rows = _raw(store)
    histories = {i: store.memories.history(i) for i in ids}
    cache = _raw(store, "SELECT * FROM script_cache ORDER BY trajectory_id")
    assert [r[1] for r in cache] == ["fake-chat"]
    _as_released_before_slimming(store)
    assert _raw(store) != slim_rows
    store.close()

    upgraded = open_store()
    assert _raw(upgraded) == slim_rows
    assert {i: upgraded.memories.history(i) for i in ids} == histories
    assert _raw(upgraded, "SELECT * FROM script_cache ORDER BY trajectory_id") == cache
    report = upgraded.check()
    assert report["ok"], report["problems"]


def test_a_history_that_does_not_follow_on_keeps_its_texts_and_check_says_so(memp) -> None:
    store, v1 = _lived(memp)
    store.memories.revise(1, "Steps:\n1. revised", v1[1], "offline", "p", 10, "revised", "test")
    with store.write():  # text written behind memp's back: the revision no longer ends where the memory is
        store.db.execute("UPDATE memories SET script = 'changed by hand' WHERE id = 1")
    problems = store.check()["problems"]
    assert any("do not hold the text of their last revision" in p for p in problems)
    with store.write():
        store.db.execute("UPDATE memories SET script = ?, version = 5 WHERE id = 1", ["Steps:\n1. revised"])
    assert any("not at the last version of their history" in p for p in store.check()["problems"])


@pytest.mark.sqlite_only
def test_slim_leaves_out_exactly_what_fill_gives_back() -> None:
    rng = random.Random(7)
    events = ["revised", "rebuilt", "reverted", *sorted(TEXTLESS_EVENTS - {"built"})]
    for _ in range(300):
        text: tuple[str | None, str | None] = (f"script {rng.random()}", rng.choice([None, "trajectory"]))
        rows = [{"event": "built", "version": 1, "old_script": None, "old_trajectory": None,
                 "new_script": text[0], "new_trajectory": text[1], "model": None}]
        for _ in range(rng.randrange(6)):
            event = rng.choice(events)
            new = (f"script {rng.random()}", text[1]) if event not in TEXTLESS_EVENTS else text
            version = rows[-1]["version"] + (event not in TEXTLESS_EVENTS)
            rows.append({"event": event, "version": version, "old_script": text[0], "old_trajectory": text[1],
                         "new_script": new[0], "new_trajectory": new[1], "model": None})
            text = new
        slimmed = slim(rows, text)
        assert fill(slimmed, text) == rows
        assert all(not any(_texts(r)) for r in slimmed if r["event"] in TEXTLESS_EVENTS)
        # A status row whose texts are not its version's (written by hand, say) keeps them.
        odd = [dict(r) for r in rows] + [{**rows[-1], "event": "retired", "new_script": "other", "old_script": "other"}]
        assert fill(slim(odd, text), text) == odd
