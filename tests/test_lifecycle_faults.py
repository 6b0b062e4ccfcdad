"""Lifecycle writes under real processes: concurrent prunes and flushes, SIGKILL mid-apply, a slow model revision
racing other writes; each checked afterwards by reading the store, not only by exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED

from memp_cli.records import Step, Trajectory
from memp_cli.store import open_store

ALFWORLD = SHARED / "alfworld-expert" / "train"
pytestmark = pytest.mark.skipif(not ALFWORLD.exists(), reason=f"real data folder {ALFWORLD} is absent")
PROCESSES = 8
PRUNE = ["prune", "--apply", "--dedupe", "0.95", "--no-discard", "--format", "json"]

# A chat model that answers slowly, registered through llm's plugin manager when a worker process imports it. It
# notes each call (process, how many offline lessons the procedure it was shown holds) in $SLOW_CALLS.
SLOW_PLUGIN = '''
import hashlib, json, os, time
import llm

class SlowChat(llm.Model):
    model_id = "slow-chat"
    supports_schema = True

    def execute(self, prompt, stream, response, conversation):
        seen = prompt.prompt.count("Following this procedure failed on")
        with open(os.environ["SLOW_CALLS"], "a") as calls:
            calls.write(f"{os.getpid()} {seen}\\n")
        time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))
        # A new answer for each new prompt; with $SLOW_VARY, for each process too.
        digest = hashlib.sha256(prompt.prompt.encode()).hexdigest()[:8] + os.environ.get("SLOW_VARY", "") * os.getpid()
        yield json.dumps({"when_to_use": "when the task fits", "parameters": [], "pitfalls": [f"answer {digest}"],
                          "steps": ["look around", f"revised from a text with {seen} lessons"]})

class SlowPlugin:
    __name__ = "SlowPlugin"

    @llm.hookimpl
    def register_models(self, register):
        register(SlowChat())

llm.plugins.pm.register(SlowPlugin(), name="slow-plugin")
'''
FLUSH_WORKER = "import sys, slowchat; from pathlib import Path; from memp_cli import update; " \
    "from memp_cli.store import open_store; update.flush(open_store(Path(sys.argv[1])), model='slow-chat')"
MEMP_WORKER = "import sys, slowchat; from memp_cli.cli import app; sys.argv = ['memp', *sys.argv[1:]]; app()"
UPDATE_WORKER = """
import json, sys, slowchat
from memp_cli import Memp
run = {"task": "put a clean mug in coffeemachine", "outcome": "failure",
       "steps": [{"action": "go to sinkbasin 1", "observation": "Nothing happens."}]}
with Memp(sys.argv[1], model="slow-chat") as mem:
    print(json.dumps(mem.update(memory_ids=[int(sys.argv[2])], outcome="failure", trajectory=run,
                                policy="adjustment").to_dict()))
"""


def _memp(db: Path, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "memp_cli", *args, "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _done(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Wait for every process; return their stdout, having asserted each exited 0."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def _sql(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def _check(db: Path, process: bool = False) -> dict[str, Any]:
    """Return `memp check`'s findings on the store, from another process or this one."""
    if process:
        out = subprocess.run([sys.executable, "-m", "memp_cli", "check", "--db", str(db), "--format", "json"],
                             capture_output=True, text=True, timeout=120, check=False)
        return dict(json.loads(out.stdout))
    store = open_store(db)
    try:
        return store.check()
    finally:
        store.close()


@pytest.fixture(scope="module")
def alf_store(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Path]:
    """A store of every tenth ALFWorld task folder (352 expert runs), offline, with credit on 60 memories."""
    from memp_cli import update
    from memp_cli.ingest import IngestOptions, ingest

    path = tmp_path_factory.mktemp("alf") / "alf.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMP_CACHE", str(model_cache))
        store = open_store(path)
        ingest(store, [str(p) for p in sorted(ALFWORLD.iterdir())[::10]], IngestOptions(model="offline"))
        for i, m in enumerate(store.memories.list(limit=60)):
            update.report(store, memory_ids=[m.id], outcome="success" if i % 3 else "failure", policy="validation")
        store.close()
    yield path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _covered(db: Path) -> set[str]:
    """Return the tasks that have an active memory, of their own or the one their merged memories went into."""
    rows = _sql(db, "SELECT lower(trim(m.task)) FROM memories m LEFT JOIN memories t ON t.id = m.merged_into "
                "WHERE m.status = 'active' OR t.status = 'active'")
    return {r[0] for r in rows}


def _credit(db: Path) -> tuple[int, int]:
    """Return the successes and failures credited to active memories, and those the outcomes reported."""
    held = _sql(db, "SELECT sum(succeeded + failed) FROM memories WHERE status = 'active'")[0][0]
    reported = _sql(db, "SELECT count(*) FROM outcome_items")[0][0]
    return int(held), int(reported)


def test_concurrent_prune_dedupe_merges_each_pair_once(alf_store: Path, tmp_path: Path) -> None:
    # Eight prunes one after another are the reference: at once, each must plan from what the one before left.
    one_by_one = _copy(alf_store, tmp_path / "sequential.db")
    for _ in range(PROCESSES):
        _done([_memp(one_by_one, *PRUNE)])
    expected = _sql(one_by_one, "SELECT id, merged_into FROM memories WHERE merged_into IS NOT NULL ORDER BY id")
    assert len(expected) > 50, "too few duplicates to race over"

    db = _copy(alf_store, tmp_path / "raced.db")
    tasks = _covered(db)
    outs = _done([_memp(db, *PRUNE) for _ in range(PROCESSES)])
    retired = [len(json.loads(out)) for out in outs]
    merges = _sql(db, "SELECT id, merged_into FROM memories WHERE merged_into IS NOT NULL ORDER BY id")
    assert merges == expected and sum(retired) == len(expected)
    # Never both sides of a pair, never a chain: every memory merged went into one that is active.
    assert _sql(db, "SELECT count(*) FROM memories m JOIN memories t ON t.id = m.merged_into "
                "WHERE t.status != 'active'") == [(0,)]
    assert _covered(db) == tasks
    held, reported = _credit(db)
    assert held == reported == 60  # each merge moved its counts once
    report = _check(db, process=True)
    assert report["ok"], report["problems"]
    assert report["merges"] == len(expected)


FAILED_STEPS = [("go to countertop 1", "On the countertop 1, you see a mug 1."), ("take mug 1 from countertop 1",
                "Nothing happens.")]


def _failed_run(i: int) -> Trajectory:
    return Trajectory(f"put a clean mug in coffeemachine (attempt {i})",
                      [Step(a, observation=o) for a, o in FAILED_STEPS], "failure")


def _pending(db: Path, outcomes: int, per_outcome: int, new_runs: int = 0) -> list[int]:
    """Record outcomes that wait for --flush: failures naming memories to revise, and successes with new runs."""
    from memp_cli import update

    store = open_store(db)
    ids = [m.id for m in store.memories.list(status="active", limit=outcomes + per_outcome)]
    for i in range(outcomes):
        update.report(store, memory_ids=ids[i:i + per_outcome], outcome="failure", trajectory=_failed_run(i),
                      policy="adjustment", every=10**6)
    for i in range(new_runs):
        run = Trajectory(f"put a hot mug in cabinet (run {i})", [Step("heat mug 1 with microwave 1", None, "ok")],
                         "success")
        update.report(store, memory_ids=ids[:1], outcome="success", trajectory=run, policy="vanilla", every=10**6)
    store.close()
    return ids


def _applied_once(db: Path, outcomes: int, per_outcome: int) -> None:
    """Assert every outcome applied, each (memory, outcome) revised exactly once, versions counting revisions."""
    assert _sql(db, "SELECT count(*) FROM outcomes WHERE applied = 0") == [(0,)]
    revisions = _sql(db, "SELECT outcome_id, memory_id, count(*) FROM memory_history WHERE event = 'revised' "
                     "GROUP BY 1, 2")
    assert len(revisions) == outcomes * per_outcome and {r[2] for r in revisions} == {1}
    assert all(r[0] is not None for r in revisions)
    assert _sql(db, "SELECT count(*) FROM memories m WHERE version != 1 + (SELECT count(*) FROM memory_history h "
                "WHERE h.memory_id = m.id AND h.event = 'revised')") == [(0,)]
    report = _check(db)
    assert report["ok"], report["problems"]


def test_concurrent_flushes_apply_each_outcome_once(alf_store: Path, tmp_path: Path) -> None:
    db = _copy(alf_store, tmp_path / "flush.db")
    _pending(db, outcomes=24, per_outcome=3, new_runs=6)
    before = _sql(db, "SELECT count(*) FROM memories")[0][0]
    outs = _done([_memp(db, "update", "--flush", "-m", "offline", "--format", "json") for _ in range(PROCESSES)])
    reports = [json.loads(out) for out in outs]
    _applied_once(db, 24, 3)
    # Together the processes revised each (memory, outcome) once and added each new run once.
    assert sum(len(r["revised"]) for r in reports) <= 24 * 3
    assert sum(len(r["added"]) for r in reports) == 6
    assert _sql(db, "SELECT count(*) FROM memories")[0][0] == before + 6


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def slow_env(tmp_path: Path) -> dict[str, str]:
    """Return an environment whose Python processes can import the slow chat model plugin."""
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "slowchat.py").write_text(SLOW_PLUGIN)
    calls = tmp_path / "calls.txt"
    calls.touch()
    path = os.pathsep.join(filter(None, [str(tmp_path / "plugin"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "SLOW_CALLS": str(calls), "SLOW_SECONDS": "0.3"}


def _calls(env: dict[str, str]) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in Path(env["SLOW_CALLS"]).read_text().splitlines()]


def test_sigkill_during_an_apply_then_flush_applies_each_outcome_once(
    alf_store: Path, tmp_path: Path, slow_env: dict[str, str]
) -> None:
    db = _copy(alf_store, tmp_path / "killed.db")
    _pending(db, outcomes=12, per_outcome=2)
    kills = 0
    for attempt in range(3):
        calls = len(_calls(slow_env))
        worker = subprocess.Popen([sys.executable, "-c", FLUSH_WORKER, str(db)], env=slow_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Killed inside its 2nd, 3rd, then 4th model call: between an outcome's two memories, or at the next one.
        _wait_for(lambda w=worker, n=calls + 2 + attempt: len(_calls(slow_env)) >= n or w.poll() is not None)
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            kills += 1
        worker.wait()
        assert _check(db)["ok"]
    assert kills == 3
    pending = _sql(db, "SELECT count(*) FROM outcomes WHERE applied = 0")[0][0]
    assert 0 < pending < 12
    _done([_memp(db, "update", "--flush", "-m", "offline")])
    _applied_once(db, 12, 2)


def test_a_slow_model_revision_never_overwrites_a_newer_version(
    alf_store: Path, tmp_path: Path, slow_env: dict[str, str]
) -> None:
    db = _copy(alf_store, tmp_path / "race.db")
    memory = _pending(db, outcomes=1, per_outcome=1)[0]
    _done([_memp(db, "update", "--flush", "-m", "offline")])  # v2: one offline lesson
    slow_env["SLOW_SECONDS"] = "2"
    slow = subprocess.Popen([sys.executable, "-c", UPDATE_WORKER, str(db), str(memory)], env=slow_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_calls(slow_env)) >= 1)  # it is revising from v2
    _done([_memp(db, "revert", str(memory), "--to", "1")])  # meanwhile another process writes v3
    (out,) = _done([slow])
    assert json.loads(out)["revised"] == {str(memory): 4}
    # Its first answer was made from v2; it was made again from v3 (no lessons) and written on top of v3.
    assert [seen for _, seen in _calls(slow_env)] == [1, 0]
    history = _sql(db, "SELECT version, event, old_script, new_script FROM memory_history WHERE memory_id = ? "
                   "AND version > 1 ORDER BY id", memory)
    assert [(v, e) for v, e, _, _ in history] == [(2, "revised"), (3, "reverted"), (4, "revised")]
    assert history[2][2] == history[1][3] and "revised from a text with 0 lessons" in history[2][3]


def test_a_slow_model_revision_of_an_outcome_another_process_applied_writes_nothing(
    alf_store: Path, tmp_path: Path, slow_env: dict[str, str]
) -> None:
    db = _copy(alf_store, tmp_path / "race2.db")
    memory = _pending(db, outcomes=0, per_outcome=1)[0]
    slow_env["SLOW_SECONDS"] = "2"
    slow = subprocess.Popen([sys.executable, "-c", UPDATE_WORKER, str(db), str(memory)], env=slow_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_calls(slow_env)) >= 1)
    # An offline update meanwhile applies the slow one's pending outcome, and its own.
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_failed_run(7).to_dict()))
    _done([_memp(db, "update", "--memory", str(memory), "-o", "failure", "-t", str(run), "-m", "offline")])
    (out,) = _done([slow])
    assert json.loads(out)["revised"] == {}
    events = _sql(db, "SELECT version, event, outcome_id FROM memory_history WHERE memory_id = ? ORDER BY id", memory)
    assert [(v, e) for v, e, _ in events] == [(1, "built"), (2, "revised"), (3, "revised")]
    assert len({o for _, _, o in events[1:]}) == 2
    assert _check(db)["ok"]


def test_concurrent_builds_write_one_version_per_memory(tmp_path: Path, slow_env: dict[str, str]) -> None:
    from conftest import EXAMPLES

    from memp_cli.ingest import IngestOptions, ingest

    db = tmp_path / "build.db"
    store = open_store(db)
    memories = ingest(store, [str(EXAMPLES)], IngestOptions(model="offline")).added
    store.close()
    # Every process answers differently: only the first to write a memory's script may make it a version.
    slow_env.update(SLOW_SECONDS="0.05", SLOW_VARY="1")

    def build(*args: str, processes: int = PROCESSES) -> list[subprocess.Popen[str]]:
        return [subprocess.Popen([sys.executable, "-c", MEMP_WORKER, "build", *args, "-m", "slow-chat", "--db",
                                  str(db)], env=slow_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(processes)]

    _done(build())
    rebuilt = _sql(db, "SELECT memory_id, count(*) FROM memory_history WHERE event = 'rebuilt' GROUP BY 1")
    assert len(rebuilt) == memories and {n for _, n in rebuilt} == {1}
    assert _sql(db, "SELECT count(*) FROM memories m JOIN script_cache c ON c.trajectory_id = m.trajectory_id "
                "AND c.model = 'slow-chat' WHERE m.script = c.script") == [(memories,)]
    _done(build("--rebuild", processes=2))  # the cache answers each: the same scripts, no new version
    assert _sql(db, "SELECT count(*) FROM memory_history WHERE event = 'rebuilt'") == [(memories,)]
    assert _check(db)["ok"]
