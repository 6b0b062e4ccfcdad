"""Distillation on a pool of model calls (--jobs): the same memories as one at a time, a rate limit that pauses every
call, kills that lose no finished script, and answers that are no procedure handed to the offline distiller."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, traj, write_jsonl
from slow_chat import SlowChat, register, script_for, unregister

from memp_cli import models

TASKS = [f"repair the printer on floor {i}" for i in range(24)]


@pytest.fixture
def slow() -> Iterator[SlowChat]:
    chat = SlowChat(latency=0.05)
    register(chat)
    try:
        yield chat
    finally:
        unregister()


def _runs(path: Path, tasks: list[str] = TASKS) -> Path:
    return write_jsonl(path, [traj(t, actions=(f"walk to floor {n}", "fix printer")) for n, t in enumerate(tasks)])


def _memories(memp, db: Path) -> dict[str, tuple[str, str, str, int]]:
    return {m["task"]: (m["script"], m["model"], m["prompt_version"], m["version"])
            for m in memp.json("list", "--db", str(db), "-n", "1000")}


def test_eight_jobs_store_what_one_job_stores(memp, slow: SlowChat, tmp_path: Path) -> None:
    src = _runs(tmp_path / "runs.jsonl")
    one = memp.json("ingest", str(src), "-m", "slow-chat", "--jobs", "1", "--db", str(tmp_path / "one.db"))
    assert slow.most_at_once == 1
    slow.most_at_once = 0
    eight = memp.json("ingest", str(src), "-m", "slow-chat", "--jobs", "8", "--db", str(tmp_path / "eight.db"))
    assert slow.most_at_once > 1
    assert one == eight and one["added"] == len(TASKS) and one["offline_scripts"] == 0
    stored = _memories(memp, tmp_path / "eight.db")
    assert stored == _memories(memp, tmp_path / "one.db")
    # Each memory holds the model's script as its first version, as if built so: the offline script it was stored
    # with while the model was asked is not a version of its own.
    assert stored == {t: (script_for(t), "slow-chat", "distill-v1", 1) for t in TASKS}
    first = memp.json("list", "--db", str(tmp_path / "eight.db"))[0]
    history = memp.json("history", str(first["memory_id"]), "--db", str(tmp_path / "eight.db"))["history"]
    assert [(h["version"], h["event"], h["model"]) for h in history] == [(1, "built", "slow-chat")]
    assert history[0]["new_script"] == first["script"]


def test_jobs_comes_from_the_environment_and_is_checked(memp, slow: SlowChat, tmp_path: Path, monkeypatch) -> None:
    src = _runs(tmp_path / "runs.jsonl", TASKS[:6])
    monkeypatch.setenv("MEMP_JOBS", "1")
    memp.json("ingest", str(src), "-m", "slow-chat")
    assert slow.most_at_once == 1
    monkeypatch.setenv("MEMP_JOBS", "many")
    result = memp("build", "--rebuild", "-m", "slow-chat", ok=False)
    assert result.exit_code == 1 and "$MEMP_JOBS must be a whole number" in result.stderr
    result = memp("build", "-m", "slow-chat", "--jobs", "0", ok=False)
    assert result.exit_code == 1 and "--jobs must be at least 1" in result.stderr


def test_a_rate_limit_pauses_every_call(memp, slow: SlowChat, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMP_RETRY_DELAY", "0.6")
    holds: list[tuple[float, float]] = []
    hold = models.PAUSE.hold

    def recorded(seconds: float) -> float:
        until = hold(seconds)
        holds.append((time.monotonic(), until))
        return until

    monkeypatch.setattr(models.PAUSE, "hold", recorded)
    slow.rate_limit = {TASKS[2]}
    report = memp.json("ingest", str(_runs(tmp_path / "runs.jsonl")), "-m", "slow-chat", "--jobs", "4")
    assert report["offline_scripts"] == 0 and report["added"] == len(TASKS)
    assert Counter(c.outcome for c in slow.calls) == {"answered": len(TASKS), "429": 1}
    ((held_at, until),) = holds
    # Once the hold is set, a thread starts at most the one call it was already let through for; every other call
    # waits for the hold to end. Without the pause, the other three threads would start ~30 calls in that time.
    during = [c for c in slow.calls if held_at < c.start < until]
    assert len(during) <= 3
    retried = [c for c in slow.calls if c.task == TASKS[2]]
    assert len(retried) == 2 and retried[1].start >= until


def test_an_answer_that_is_no_procedure_twice_goes_offline_for_that_run_only(
    memp, slow: SlowChat, tmp_path: Path, monkeypatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(models.time, "sleep", sleeps.append)
    slow.latency = 0
    slow.unusable = {TASKS[3]}
    result = memp("ingest", str(_runs(tmp_path / "runs.jsonl", TASKS[:8])), "-m", "slow-chat", "--jobs", "4",
                  "--json")
    report = json.loads(result.stdout)
    assert report["offline_scripts"] == 1 and report["model"] == "slow-chat"
    assert "gave no usable answer" in result.stderr and "offline script kept" in result.stderr
    # Asked once more at once, never waited for, then left to the offline distiller; the other runs kept the model.
    assert [c.outcome for c in slow.calls if c.task == TASKS[3]] == ["unusable", "unusable"]
    assert sleeps == []
    models_by_task = {m["task"]: m["model"] for m in memp.json("list")}
    assert models_by_task == {t: "offline" if t == TASKS[3] else "slow-chat" for t in TASKS[:8]}


# -- killed for real ------------------------------------------------------------------------------------------------


def _slow_memp(args: list[str], log: Path, latency: float = 0.2) -> subprocess.Popen[str]:
    env = {**os.environ, "SLOW_CHAT_LATENCY": str(latency), "SLOW_CHAT_LOG": str(log), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "slow_chat.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _by_model(db: Path) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        return Counter(r[0] for r in conn.execute("SELECT coalesce(model, 'none') FROM memories"))
    except sqlite3.OperationalError:
        return Counter()
    finally:
        conn.close()


def _kill_when(proc: subprocess.Popen[str], db: Path, finished: int) -> None:
    """SIGKILL `proc` once `finished` memories hold the slow model's script."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and _by_model(db)["slow-chat"] < finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the kill: {proc.communicate()[1]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def _histories(memp, db: Path) -> dict[str, list[str]]:
    return {m["task"]: [h["event"] for h in memp.json("history", str(m["memory_id"]), "--db", str(db))["history"]]
            for m in memp.json("list", "--db", str(db), "-n", "1000")}


@pytest.mark.parametrize("killed", ["ingest", "build"])
def test_sigkill_leaves_every_finished_script_stored_and_the_rest_pending(memp, tmp_path: Path, killed: str) -> None:
    tasks = [f"repair the printer on floor {i}" for i in range(40)]
    src, db, log = _runs(tmp_path / "runs.jsonl", tasks), tmp_path / "killed.db", tmp_path / "answers.log"
    if killed == "build":
        memp.json("ingest", str(src), "-m", "offline", "--db", str(db))
    command = ["ingest", str(src)] if killed == "ingest" else ["build"]
    _kill_when(_slow_memp([*command, "-m", "slow-chat", "--jobs", "8", "--db", str(db)], log), db, 8)

    # Every run is stored; each holds the model's whole script or its offline one, pending; nothing in between.
    stored = {m["task"]: m for m in memp.json("list", "--db", str(db), "-n", "1000")}
    assert set(stored) == set(tasks)
    done = {t for t, m in stored.items() if m["model"] == "slow-chat"}
    assert len(done) >= 8 and len(done) < len(tasks)
    assert all(stored[t]["script"] == script_for(t) for t in done)
    assert all(m["model"] == "offline" and "Steps:" in m["script"] for t, m in stored.items() if t not in done)
    assert json.loads(memp("check", "--db", str(db), "--format", "json").stdout)["ok"] is True

    # The next build finishes the rest, each once; the one after has nothing left to do.
    rest = _slow_memp(["build", "-m", "slow-chat", "--jobs", "8", "--db", str(db), "--format", "json"], log, 0.0)
    out, err = rest.communicate(timeout=300)
    assert rest.returncode == 0, err
    assert json.loads(out) == {"model": "slow-chat", "rebuilt": len(tasks) - len(done), "failed": 0, "held": 0}
    assert _by_model(db) == {"slow-chat": len(tasks)}
    first = ["built"] if killed == "ingest" else ["built", "rebuilt"]
    assert _histories(memp, db) == {t: first if t in done else ["built", "rebuilt"] for t in tasks}
    again = _slow_memp(["build", "-m", "slow-chat", "--db", str(db), "--format", "json"], log, 0.0)
    assert json.loads(again.communicate(timeout=300)[0])["rebuilt"] == 0
