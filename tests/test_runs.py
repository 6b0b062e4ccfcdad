"""A run stored once (memp_cli/store/runs.py): steps deflated where smaller, a memory's text of its run left NULL
where it is the run's render, and every reader giving back the text memp built, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from memp_cli import formats
from memp_cli.distill import offline_script
from memp_cli.ingest import build_memory
from memp_cli.migrations import migrations
from memp_cli.records import Step, Trajectory
from memp_cli.store import NewMemory, open_store
from memp_cli.store.runs import RENDER_VERSION, decode_steps, encode_steps, steps_text

DIM = 384


def _vector(rng: random.Random) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(DIM)]


def _items() -> list[NewMemory]:
    """The bundled runs as ingest builds them (offline scripts), one in three kept as a script build (no run)."""
    rng = random.Random(7)
    runs = [t for f in sorted(EXAMPLES.glob("*.jsonl")) for t in formats.read(formats.Source(f, str(f)))]
    out = []
    for i, run in enumerate(runs):
        build = "script" if i % 3 == 2 else "proceduralization"
        script = offline_script(run)
        text, tokens = build_memory(run, build, script)
        out.append(NewMemory(run, build, script, text, tokens, _vector(rng)))
    return out


def _texts(store: Any) -> dict[str, str | None]:
    return {m.trajectory_id: m.trajectory for m in store.memories.list()}


# -- the renderer, pinned -------------------------------------------------------------------------------------------


def test_the_render_of_a_run_is_pinned() -> None:
    # Memories store NULL where their text is this render, and read it back by rendering the stored run: a change to
    # Trajectory.render changes what every such memory reads. Changing the renderer therefore needs a migration that
    # first writes the old texts into memories.trajectory, then bumps RENDER_VERSION (and `trajectory_render` in
    # meta). Do not edit the expected text to make this pass.
    run = Trajectory(
        task="heat an égg",
        steps=[Step("go to fridge 1", "The egg is cold; find it first.", "You see   an egg\n\tand milk."),
               Step("take egg 1", None, "x" * 301), Step("think: done", "", ""), Step("look")],
        outcome="success", score=0.5,
    )
    assert run.render() == (
        "Task: heat an égg\nThought: The egg is cold; find it first.\n> go to fridge 1\nYou see an egg and milk.\n"
        f"> take egg 1\n{'x' * 300} ...\n> think: done\n> look\nOutcome: success (score 0.5)"
    )
    assert Trajectory("t", [], None).render() == "Task: t\nOutcome: None"
    assert RENDER_VERSION == 1


# -- steps ------------------------------------------------------------------------------------------------------------


def test_steps_round_trip_as_text_or_deflate_whichever_is_smaller() -> None:
    assert encode_steps([]) == "[]" and decode_steps(encode_steps([])) == []
    small = [Step("ls")]
    assert encode_steps(small) == '[{"action":"ls"}]'  # deflate would be longer: kept as text
    unicode = [Step("écrire ✓ 漢字 🙂", "pensée", "résultat\u2028fin")] * 20
    big = [Step("cat log", None, "line of output\n" * 20_000), Step("grep", "why", "é" * 5000)]
    for steps in (unicode, big):
        stored = encode_steps(steps)
        assert isinstance(stored, bytes) and len(stored) < len(steps_text(stored).encode())
        assert decode_steps(stored) == steps
        assert json.loads(zlib.decompress(stored, -15)) == [s.to_dict() for s in steps]  # raw DEFLATE, no header
        assert decode_steps(encode_steps(steps, blob=False)) == steps
        assert isinstance(encode_steps(steps, blob=False), str)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(Step, _text, st.none() | _text, st.none() | _text), max_size=12), st.booleans())
def test_any_steps_decode_to_what_was_encoded(steps: list[Step], blob: bool) -> None:
    stored = encode_steps(steps, blob)
    assert decode_steps(stored) == steps
    assert isinstance(stored, str) or blob


# -- the text of a memory's run ---------------------------------------------------------------------------------------


def test_a_memory_reads_the_text_it_was_built_with_and_stores_it_once(backend: str) -> None:
    items = _items()
    store: Any = open_store()
    ids = store.memories.add(items, "memp-minilm")
    for item in items:
        memory = store.memories.get(ids[item.trajectory.id])
        assert memory.trajectory == item.trajectory_text
        assert memory.to_dict()["trajectory"] == item.trajectory_text
        assert "stored_trajectory" not in memory.to_dict() and "run_steps" not in memory.to_dict()
    raw = {r[0]: r[1] for r in store.db.execute("SELECT trajectory_id, trajectory FROM memories")}
    for item in items:  # NULL: the render of the run; '': no run (a script build)
        assert raw[item.trajectory.id] == (None if item.trajectory_text else "")
    kinds = {type(r[0]) for r in store.db.execute("SELECT steps FROM trajectories")}
    assert kinds == ({str} if backend == "pg" else {bytes})  # every bundled run deflates; PostgreSQL keeps JSON
    assert store.check()["ok"]
    store.close()


def test_revisions_and_a_revert_keep_every_version_s_text(memp, backend: str) -> None:
    from memp_cli import update

    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "offline")
    store: Any = open_store()
    built = store.memories.get(1)
    assert built.trajectory and built.trajectory == store.memories.trajectory(built.trajectory_id).render()
    store.memories.revise(1, "Steps:\n1. one", built.trajectory, "offline", "p", 10, "revised", "same run")
    store.memories.revise(1, "Steps:\n1. two", "Task: a run told otherwise", "offline", "p", 10, "revised", "new run")
    store.memories.revise(1, "Steps:\n1. three", None, "offline", "p", 10, "revised", "no run")
    assert store.memories.get(1).trajectory is None
    texts = [store.memories.version_content(1, v)[1] for v in (1, 2, 3, 4)]
    assert texts == [built.trajectory, built.trajectory, "Task: a run told otherwise", None]
    history = store.memories.history(1)
    assert history[0]["new_trajectory"] == built.trajectory
    assert [h["new_trajectory"] for h in history[1:]] == texts[1:]
    assert update.revert(store, 1, 1) == 5
    assert store.memories.get(1).trajectory == built.trajectory
    assert store.db.execute("SELECT trajectory FROM memories WHERE id = 1").fetchone()[0] is None
    assert update.revert(store, 1, 3) == 6
    assert store.memories.get(1).trajectory == "Task: a run told otherwise"
    assert store.check()["ok"], store.check()["problems"]
    store.close()


def test_export_import_and_copies_read_the_same_texts(memp, backend: str, tmp_path: Path) -> None:
    memp("ingest", str(EXAMPLES), "-m", "offline", "-b", "proceduralization")
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "offline", "-b", "script")  # known already: skipped
    store: Any = open_store()
    store.memories.revise(2, "Steps:\n1. x", "Task: told otherwise", "offline", "p", 10, "revised", "test")
    store.memories.revise(3, "Steps:\n1. y", None, "offline", "p", 10, "revised", "test")
    texts = _texts(store)
    histories = {m.trajectory_id: store.memories.history(m.id) for m in store.memories.list()}
    store.close()
    assert texts and None in texts.values() and "Task: told otherwise" in texts.values()

    exported = tmp_path / "all.jsonl"
    memp("export", "-o", str(exported), "--vectors")
    lines = [json.loads(x) for x in exported.read_text().splitlines()]
    shown = {x["trajectory_id"]: x["trajectory"] for x in lines if x.get("type") == "memory"}
    assert shown == texts
    memp("import", str(exported), "--db", str(tmp_path / "imported.db"))
    copied = tmp_path / "copied.db"
    memp("migrate", "--to", str(copied))
    for path in (tmp_path / "imported.db", copied):
        other: Any = open_store(path)
        assert _texts(other) == texts
        assert {m.trajectory_id: other.memories.history(m.id) for m in other.memories.list()} == histories
        raw = [r[0] for r in other.db.execute("SELECT trajectory FROM memories")]
        assert raw.count(None) == len(texts) - 2  # every text but the two revisions' is the run's render
        assert any(isinstance(r[0], bytes) for r in other.db.execute("SELECT steps FROM trajectories"))
        assert other.check()["ok"], other.check()["problems"]
        other.close()


# -- an older store ---------------------------------------------------------------------------------------------------


def _as_released_before_m017(store: Any) -> None:
    """Write the store as memp wrote it before m017 (steps as JSON text, every memory's text in full, NULL for no
    run) and mark m017 not applied."""
    with store.write():
        for memory in store.memories.list():
            store.db.execute("UPDATE memories SET trajectory = ? WHERE id = ?", [memory.trajectory, memory.id])
        for trajectory_id, steps in store.db.execute("SELECT id, steps FROM trajectories").fetchall():
            store.db.execute("UPDATE trajectories SET steps = ? WHERE id = ?", [steps_text(steps), trajectory_id])
        store.db.execute("DELETE FROM meta WHERE key = 'trajectory_render'")
        store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm017_lean_runs'")


def _payload(store: Any) -> int:
    return int(store.db.execute(
        "SELECT (SELECT sum(length(CAST(steps AS BLOB))) FROM trajectories) + "
        "(SELECT coalesce(sum(length(CAST(trajectory AS BLOB))), 0) FROM memories)"
    ).fetchone()[0])


def _pages_vacuumed(store: Any) -> int:
    store.db.execute("VACUUM")
    return int(store.db.execute("PRAGMA page_count").fetchone()[0])


def test_an_older_store_migrates_to_the_same_reads_and_fewer_bytes(memp, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store: Any = open_store(path)
    store.memories.add(_items(), "memp-minilm")
    store.memories.revise(1, "Steps:\n1. x", "Task: told otherwise", "offline", "p", 10, "revised", "test")
    before = [m.to_dict() for m in store.memories.list()]
    histories = [store.memories.history(m["memory_id"]) for m in before]
    lean = _payload(store)
    _as_released_before_m017(store)
    assert "m017_lean_runs" in [m.name for m in migrations.pending(sqlite_utils.Database(store.db))]
    assert store.db.execute("SELECT count(*) FROM memories WHERE trajectory IS NULL").fetchone()[0] > 0
    old = _payload(store)
    old_pages = _pages_vacuumed(store)
    store.close()

    upgraded: Any = open_store(path)
    assert [m.to_dict() for m in upgraded.memories.list()] == before
    assert [upgraded.memories.history(m["memory_id"]) for m in before] == histories
    assert _payload(upgraded) == lean < old * 0.75
    assert upgraded.db.execute("SELECT value FROM meta WHERE key = 'trajectory_render'").fetchone()[0] == "1"
    assert upgraded.check()["ok"], upgraded.check()["problems"]
    assert _pages_vacuumed(upgraded) < old_pages  # the vectors and the full-text index are most of so small a store
    upgraded.close()


def test_check_names_steps_that_do_not_decode(memp) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "offline")
    store: Any = open_store()
    with store.write():
        store.db.execute("UPDATE trajectories SET steps = X'00ff00ff' WHERE rowid = 1")
    problems = store.check()["problems"]
    assert any("steps that do not decode" in p for p in problems), problems
    store.close()


def test_an_older_store_with_a_run_no_reader_can_parse_still_opens_and_check_names_it(memp, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store: Any = open_store(path)
    store.memories.add(_items(), "memp-minilm")
    _as_released_before_m017(store)
    with store.write():  # two rows broken behind memp's back before the upgrade: cut JSON, a step without an action
        store.db.execute("""UPDATE trajectories SET steps = '[{"action": "x"' WHERE rowid = 1""")
        store.db.execute("""UPDATE trajectories SET steps = '[{"thought": "t"}]' WHERE rowid = 2""")
    store.close()
    upgraded: Any = open_store(path)  # m017 leaves those rows as they are and migrates the rest
    assert [tuple(r) for r in upgraded.db.execute(
        "SELECT typeof(steps) FROM trajectories WHERE rowid IN (1, 2)")] == [("text",), ("text",)]
    assert upgraded.memories.stats()["memories"] == len(_items())
    assert any("2 trajectories have steps that do not decode" in p for p in upgraded.check()["problems"])
    upgraded.close()


def test_a_score_of_minus_zero_keeps_the_text_it_was_built_with() -> None:
    item = _items()[0]
    run = Trajectory(item.trajectory.task, item.trajectory.steps, "failure", score=-0.0)
    text = run.render()
    assert "(score -0)" in text
    store: Any = open_store()
    memory_id = store.memories.add([NewMemory(run, "trajectory", None, text, 3, item.vector)], "memp-minilm")[run.id]
    assert store.memories.get(memory_id).trajectory == text  # SQLite keeps the score as 0.0: the text is stored
    store.close()


@pytest.mark.parametrize("text", ["", "Task: only a task"])
def test_a_text_that_is_not_the_render_is_stored_as_it_is(text: str) -> None:
    item = _items()[0]
    item = NewMemory(item.trajectory, "trajectory", None, text, 3, item.vector)
    store: Any = open_store()
    memory_id = store.memories.add([item], "memp-minilm")[item.trajectory.id]
    assert store.memories.get(memory_id).trajectory == (text or None)
    assert store.db.execute("SELECT trajectory FROM memories").fetchone()[0] == text
    store.close()


def test_a_postgresql_store_of_before_reads_no_run_as_none_after_p004(memp, pg) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "offline", "-b", "script")
    store: Any = open_store()
    with store.write():  # as memp wrote a script build before: NULL for no run; p004 not applied
        store.db.execute("UPDATE memories SET trajectory = NULL")
        store.db.execute("DELETE FROM meta WHERE key = 'trajectory_render'")
        store.db.execute("DELETE FROM memp_migrations WHERE name = 'p004_lean_runs'")
    store.close()
    upgraded: Any = open_store()
    assert {m.trajectory for m in upgraded.memories.list()} == {None}
    assert {r[0] for r in upgraded.db.execute("SELECT trajectory FROM memories")} == {""}
    assert upgraded.db.execute("SELECT value FROM meta WHERE key = 'trajectory_render'").fetchone()[0] == "1"
    upgraded.close()


def test_a_recall_renders_only_the_memories_it_outputs(memp, monkeypatch: pytest.MonkeyPatch) -> None:
    memp("ingest", str(EXAMPLES), "-m", "offline", "-b", "proceduralization")
    rendered: list[str] = []
    render = Trajectory.render

    def counted(self: Trajectory) -> str:
        rendered.append(self.task)
        return render(self)

    monkeypatch.setattr(Trajectory, "render", counted)
    out = memp.json("recall", "heat an egg and put it on the table", "-k", "1", "--format", "json")
    shown = [m["task"] for m in out["matches"] + out["warnings"]]
    assert shown and out["matches"][0]["trajectory"].startswith("Task: ")
    assert sorted(rendered) == sorted(shown)
