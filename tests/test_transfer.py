"""memp export / memp import on a store built from real ALFWorld runs, with updates, revisions and retirements."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED, write_jsonl

from memp_cli.store import open_store
from memp_cli.transfer.format import VOLATILE

EXPERT = SHARED / "alfworld-expert"
pytestmark = pytest.mark.skipif(not EXPERT.is_dir(), reason=f"real ALFWorld runs not found at {EXPERT}")

FAILED_RUN = {
    "task": "put a clean mug in coffeemachine",
    "steps": [{"action": "go to sinkbasin 1", "observation": "On the sinkbasin 1, you see nothing."},
              {"action": "clean mug 1 with sinkbasin 1", "observation": "Nothing happens."}],
    "outcome": "failure",
}


def _subset(tmp: Path, start: int, count: int) -> Path:
    """Return a folder of `count` ALFWorld expert runs, every 97th from `start` (all six task types)."""
    files = sorted(EXPERT.rglob("gt_traj.json"))[start::97][:count]
    folder = tmp / f"alf-{start}-{count}"
    for f in files:
        # The task folder names the task type: kept, as the data set lays it out.
        target = folder / f.parent.parent.name / f.parent.name
        target.mkdir(parents=True)
        (target / "gt_traj.json").write_bytes(f.read_bytes())
    return folder


def _lived_in(memp: Any, tmp: Path, db: Path) -> Path:
    """Build a store from real runs, then recall, credit, revise, retire and merge in it; return its path."""
    d = ["--db", str(db)]
    memp("ingest", str(_subset(tmp, 0, 30)), "-m", "offline", *d)
    recall = memp.json("recall", "put a clean mug in coffeemachine", "-k", "2", *d)
    failed = str(write_jsonl(tmp / "failed.jsonl", [FAILED_RUN]))
    memp("update", "--recall", recall["recall_id"], "--outcome", "failure", "-t", failed, "-m", "offline", *d)
    memp("ingest", failed, "-m", "offline", *d)
    again = memp.json("recall", "heat some egg and put it in garbagecan", "-k", "1", "-p", "avefact", *d)
    memp("update", "--recall", again["recall_id"], "--outcome", "success", *d)
    memp("update", "--memory", "3", "--outcome", "success", *d)
    store = open_store(db)
    store.memories.retire(5, "retired by the test")
    store.memories.retire(6, "a near duplicate", merged_into=20)  # into a newer memory: exported after it
    store.close()
    return db


def _records(text: str) -> list[dict[str, Any]]:
    """Return an export's records without the fields documented to differ between exports."""
    out = []
    for line in text.splitlines():
        record = json.loads(line)
        for key in VOLATILE.get(record["type"], ()):
            record.pop(key)
        out.append(record)
    return out


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])


@pytest.mark.parametrize("vectors", [True, False])
def test_round_trip_is_lossless(memp, tmp_path: Path, vectors: bool) -> None:
    source = _lived_in(memp, tmp_path, tmp_path / "a.db")
    flag = ["--vectors"] if vectors else []
    first = memp("export", "--db", str(source), *flag).stdout
    records = _records(first)
    kinds = [r["type"] for r in records]
    assert kinds[0] == "header" and kinds[-1] == "end" and kinds.count("memory") == _count(source)
    memories = [r for r in records if r["type"] == "memory"]
    assert {m["status"] for m in memories} == {"active", "retired"}
    assert any(m["version"] > 1 for m in memories), "the failed run revised a memory"
    assert any(m["merged_into"] for m in memories), "dedupe merged memories"
    assert any(m["keywords"] for m in memories) and any(m["succeeded"] for m in memories)
    assert kinds.count("outcome") == 3
    assert all((m["vector"] is not None) == vectors for m in memories)

    (tmp_path / "a.jsonl").write_text(first)
    report = memp.json("import", str(tmp_path / "a.jsonl"), "--db", str(tmp_path / "b.db"))
    assert report["added"] == len(memories) and report["skipped"] == 0 and report["outcomes"] == 3
    assert report["embedded"] == (0 if vectors else len(memories))
    second = memp("export", "--db", str(tmp_path / "b.db"), *flag).stdout
    assert _records(second) == records
    # The imported store answers as the source does.
    task = ["recall", "put a clean mug in coffeemachine", "-k", "3"]
    a = memp.json(*task, "--db", str(source))
    b = memp.json(*task, "--db", str(tmp_path / "b.db"))
    assert [m["trajectory_id"] for m in a["matches"]] == [m["trajectory_id"] for m in b["matches"]]
    assert [m["score"] for m in a["matches"]] == [m["score"] for m in b["matches"]]
    assert memp.json("check", "--db", str(tmp_path / "b.db"))["ok"]


def test_import_merges_without_duplicates(memp, tmp_path: Path) -> None:
    memp("ingest", str(_subset(tmp_path, 0, 20)), "-m", "offline", "--db", str(tmp_path / "a.db"))
    memp("ingest", str(_subset(tmp_path, 0, 12)), "-m", "offline", "--db", str(tmp_path / "b.db"))
    memp("ingest", str(_subset(tmp_path, 50, 5)), "-m", "offline", "--db", str(tmp_path / "b.db"))
    exported = tmp_path / "a.jsonl"
    memp("export", "--db", str(tmp_path / "a.db"), "-o", str(exported))
    before = _count(tmp_path / "b.db")
    report = memp.json("import", str(exported), "--db", str(tmp_path / "b.db"))
    assert (report["read"], report["added"], report["skipped"]) == (20, 8, 12)
    assert _count(tmp_path / "b.db") == before + 8
    again = memp.json("import", "-", "--db", str(tmp_path / "b.db"), input=exported.read_text())
    assert (again["added"], again["skipped"]) == (0, 20)
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT count(*) - count(DISTINCT task || steps) FROM trajectories").fetchone()[0] == 0


def _broken(text: str, line: int, replace: str | None) -> str:
    lines = text.splitlines()
    if replace is None:
        del lines[line - 1]
    else:
        lines[line - 1] = replace
    return "\n".join(lines) + "\n"


def test_a_broken_export_is_rejected_with_its_line_and_nothing_imported(memp, tmp_path: Path) -> None:
    memp("ingest", str(_subset(tmp_path, 0, 10)), "-m", "offline", "--db", str(tmp_path / "a.db"))
    good = memp("export", "--db", str(tmp_path / "a.db")).stdout
    memory = json.loads(good.splitlines()[3])
    changed = {**memory, "run": {**memory["run"], "task": "something else"}}
    wrong_type = {**memory, "tokens": "many"}
    cases = {
        "not JSON": (_broken(good, 5, '{"type": "memory", '), 5),
        "changed": (_broken(good, 4, json.dumps(changed)), 4),
        "wrong type": (_broken(good, 4, json.dumps(wrong_type)), 4),
        "unknown key": (_broken(good, 6, json.dumps({**memory, "extra": 1})), 6),
        "cut short": ("\n".join(good.splitlines()[:-1]) + "\n", 11),
        "count mismatch": (_broken(good, 3, None), 11),
    }
    target = tmp_path / "b.db"
    memp("ingest", str(_subset(tmp_path, 40, 3)), "-m", "offline", "--db", str(target))
    for what, (text, line) in cases.items():
        path = tmp_path / f"{what}.jsonl"
        path.write_text(text)
        result = memp("import", str(path), "--db", str(target), ok=False)
        assert result.exit_code == 1, what
        assert f"{path}:{line}:" in result.stderr, (what, result.stderr)
        assert _count(target) == 3, f"{what}: something was imported"


def test_export_filters(memp, tmp_path: Path) -> None:
    db = _lived_in(memp, tmp_path, tmp_path / "a.db")
    every = [r for r in _records(memp("export", "--db", str(db)).stdout) if r["type"] == "memory"]

    def exported(*args: str) -> list[dict[str, Any]]:
        text = memp("export", "--db", str(db), *args).stdout
        return [r for r in _records(text) if r["type"] == "memory"]

    assert {m["status"] for m in exported("--status", "retired")} == {"retired"}
    assert {m["run"]["outcome"] for m in exported("--outcome", "failure")} == {"failure"}
    kind = every[0]["run"]["metadata"]["task_type"]
    typed = exported("--task-type", kind)
    assert typed and {m["run"]["metadata"]["task_type"] for m in typed} == {kind}
    assert {m["build"] for m in exported("--build", "proceduralization")} == {"proceduralization"}
    assert len(exported("--since", "2000-01-01")) == len(every) and exported("--since", "2999-01-01") == []


def test_embed_model_travels_and_is_made_again_for_another(memp, fake_chat, tmp_path: Path) -> None:
    memp("ingest", str(_subset(tmp_path, 0, 6)), "-m", "offline", "--db", str(tmp_path / "a.db"))
    path = tmp_path / "a.jsonl"
    memp("export", "--db", str(tmp_path / "a.db"), "--vectors", "-o", str(path))
    report = memp.json("import", str(path), "--db", str(tmp_path / "b.db"), "--embed-model", "fake-embed")
    assert report["embed_model"] == "fake-embed" and report["embedded"] == 6
    assert memp.json("stats", "--db", str(tmp_path / "b.db"))["embed_dim"] == 8


def test_store_reads_without_extension_loading(memp, tmp_path: Path) -> None:
    db = _lived_in(memp, tmp_path, tmp_path / "a.db")
    copy = tmp_path / "copy.db"
    memp("export", "--db", str(db), "--sqlite", str(copy))
    assert memp("export", "--db", str(db), "--sqlite", str(copy), ok=False).exit_code == 1
    # A fresh interpreter, stdlib sqlite3 only (no sqlean, no sqlite-vec): what the sqlite3 shell, sqlite-utils
    # and Datasette see.
    script = (
        "import json, sqlite3, sys, sqlite_utils\n"
        "db = sqlite_utils.Database(sqlite3.connect(sys.argv[1]))\n"
        "counts = {t.name: t.count for t in db.tables}\n"
        "hits = db.execute(\"SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'mug'\").fetchone()[0]\n"
        "print(json.dumps({'counts': counts, 'fts': hits, 'module': type(db.conn).__module__}))\n"
    )
    for path in (db, copy):
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
        seen = json.loads(out.stdout)
        assert seen["module"] == "sqlite3"
        assert seen["counts"]["memories"] == _count(db) and seen["counts"]["memory_vectors"] == _count(db)
        assert seen["fts"] > 0
    with sqlite3.connect(copy) as conn:
        # A write from a plain SQLite client keeps the full-text index in step (the triggers need no extension).
        conn.execute("UPDATE memories SET script = 'zebra procedure' WHERE id = 1")
        assert conn.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH 'zebra'").fetchall() == [(1,)]


def test_list_pages_a_table_and_prints_all_json(memp, tmp_path: Path) -> None:
    from memp_cli.cli.manage import PAGE

    runs = [{"task": f"task number {i}", "steps": [{"action": f"do {i}"}], "outcome": "success"} for i in range(60)]
    memp("ingest", str(write_jsonl(tmp_path / "runs.jsonl", runs)), "-b", "trajectory")
    table = memp("list", "--format", "table")
    assert f"showing 1-{PAGE}; --offset {PAGE}" in table.stderr
    assert "showing" not in memp("list", "--format", "table", "--offset", str(PAGE)).stderr, "the last page"
    assert len(memp.json("list")) == 60
    assert [m["task"] for m in memp.json("list", "-n", "2", "--offset", "1")] == ["task number 58", "task number 57"]
