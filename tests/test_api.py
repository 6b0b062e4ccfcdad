"""The Python API (`memp_cli.Memp`): runs as records and dicts, list/show/retire, the example agent loop, and a host
program left as it was."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, traj

from memp_cli import Memp
from memp_cli.errors import MempError, NotFoundError
from memp_cli.records import Step, Trajectory


@pytest.fixture
def mem(tmp_path: Path) -> Memp:
    with Memp(tmp_path / "api.db", model="offline") as opened:
        yield opened


def test_ingest_takes_dicts_and_trajectory_records(mem: Memp) -> None:
    record = Trajectory("free disk space on the build host", [Step("df -h", None, "100% full")], "success")
    assert mem.ingest(traj("put a mug in the sink"), traj("heat an egg", "failure")).added == 2
    assert mem.ingest(record).added == 1
    assert mem.ingest(record).skipped == 1
    with pytest.raises(MempError, match="paths or runs"):
        mem.ingest(str(EXAMPLES), record)
    assert {m.task for m in mem.list()} == {"put a mug in the sink", "heat an egg", record.task}


def test_list_filters_show_retire_and_restore(mem: Memp) -> None:
    mem.ingest(str(EXAMPLES))
    everything = mem.list()
    assert len(everything) == 16 and [m.id for m in everything] == sorted((m.id for m in everything), reverse=True)
    failures = mem.list(outcome="failure")
    assert failures and all(m.outcome == "failure" for m in failures)
    assert len(mem.list(limit=3)) == 3
    with pytest.raises(MempError, match="status must be one of"):
        mem.list(status="gone")

    shown = mem.show(everything[0].id)
    assert shown.task == everything[0].task and shown.render()
    retired = mem.retire(shown.id, "superseded")
    assert retired.status == "retired" and retired.retired_reason == "superseded"
    assert shown.id not in {m.memory.id for m in mem.recall(shown.task, k=16).matches}
    assert [m.id for m in mem.list(status="retired")] == [shown.id]
    assert mem.restore(shown.id).status == "active"
    with pytest.raises(NotFoundError):
        mem.show(99999)


def test_example_agent_loop_runs_offline_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    env = {**os.environ, "LLM_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "agent_loop.py"), "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {"learned": 16}
    runs = lines[1:-1]
    assert [r["outcome"] for r in runs] == ["success", "success", "success", "failure"]
    assert all(r["recall_id"].startswith("r-") for r in runs)
    # Nothing in the store fits a poem: the default floor gives the agent nothing rather than a wrong procedure.
    assert all(r["prompt_chars"] > 0 for r in runs[:3]) and runs[3]["prompt_chars"] == 0
    # Each success credited what recall gave and became a memory; the run that followed no memory blamed none.
    assert all(r["credited"] and len(r["added"]) == 1 for r in runs[:3]) and "credited" not in runs[3]
    assert lines[-1] == {"memories": 19}
    with Memp(db) as mem:
        assert sum(m.succeeded for m in mem.list()) == 6


def test_importing_memp_leaves_the_host_sqlite_modules_alone(tmp_path: Path) -> None:
    """`import memp_cli` and a store opened and migrated through it change no module of the host program."""
    script = (
        "import sys\n"
        "before = {name: sys.modules.get(name) for name in ('pysqlite3', 'pysqlite3.dbapi2')}\n"
        "import memp_cli\n"
        f"mem = memp_cli.Memp({str(tmp_path / 'host.db')!r})\n"
        "assert 'sqlite_utils' in sys.modules  # a new store was migrated\n"
        "after = {name: sys.modules.get(name) for name in before}\n"
        "import sqlite_utils.utils\n"
        "print(after == before, sqlite_utils.utils.sqlite3.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "sqlite3"]


def test_migrations_tolerate_nothing_through_sqlite_utils_error_handling() -> None:
    """sqlite-utils is handed a sqlean connection, whose errors its `except sqlite3.OperationalError` misses:
    a migration may not rely on alter=True, ignore=True or find_unique_name; it says IF (NOT) EXISTS in SQL."""
    tree = ast.parse((ROOT / "memp_cli" / "migrations.py").read_text())
    leaning = [
        f"line {node.lineno}: {kw.arg}=True"
        for node in ast.walk(tree) if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg in {"alter", "ignore", "find_unique_name"}
        and isinstance(kw.value, ast.Constant) and kw.value.value is True
    ]
    assert leaning == []
