"""The update lifecycle: credit, policies, adjustment by revision, history, revert, prune, and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import EXAMPLES, procedure_json, traj, write_jsonl

from memp_cli.prune import Rules, plan
from memp_cli.store import open_store

# The store, update, recall and prune behaviour, on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.usefixtures("backend")

FAILED_RUN = {
    "task": "clean a cup and put it in the coffee machine",
    "steps": [
        {"action": "go to sinkbasin 1", "observation": "On the sinkbasin 1, you see nothing."},
        {"action": "clean cup 1 with sinkbasin 1", "observation": "Nothing happens."},
    ],
    "outcome": "failure",
}


def _recall(memp, task: str, *args: str) -> dict:
    return memp.json("recall", task, *args)


def test_full_loop_with_a_model(memp, fake_chat, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "mug.jsonl", [json.loads((EXAMPLES / "household.jsonl").read_text().splitlines()[0])])
    fake_chat.queue(procedure_json(["go to {place}", "take {mug}", "clean {mug}", "put {mug} in coffeemachine"]))
    memp("ingest", str(src), "-m", "fake-chat")
    first = _recall(memp, "clean a cup and put it in the coffee machine", "-k", "1")
    (match,) = first["matches"]
    v1_script = match["script"]
    assert match["version"] == 1

    run = write_jsonl(tmp_path / "failed.jsonl", [FAILED_RUN])
    fake_chat.queue(procedure_json(["go to {place}", "take {mug}", "clean {mug} before anything else"], ["a cup is not a mug"]))
    report = memp.json(
        "update", "--recall", first["recall_id"], "--outcome", "failure", "-t", str(run), "-p", "adjustment", "-m",
        "fake-chat",
    )
    assert report["revised"] == {str(match["memory_id"]): 2} and report["added"] == []
    revise_prompt = fake_chat.prompts[-1]
    assert "<procedure>\nWhen to use: when the task fits" in revise_prompt.prompt
    assert "<failed_run>\nTask: clean a cup and put it in the coffee machine" in revise_prompt.prompt
    assert "> clean cup 1 with sinkbasin 1\nNothing happens." in revise_prompt.prompt

    second = _recall(memp, "clean a cup and put it in the coffee machine", "-k", "1")["matches"][0]
    assert second["version"] == 2 and "- a cup is not a mug" in second["script"]
    shown = memp.json("show", str(match["memory_id"]))
    assert shown["failed"] == 1 and shown["recalled"] == 2

    history = memp.json("history", str(match["memory_id"]))["history"]
    assert [(h["version"], h["event"]) for h in history] == [(1, "built"), (2, "revised")]
    assert history[1]["old_script"] == v1_script and history[1]["model"] == "fake-chat"
    assert history[1]["reason"] == f"failed in recall {first['recall_id']}"

    memp("revert", str(match["memory_id"]), "--to", "1")
    restored = memp.json("show", str(match["memory_id"]))
    assert restored["script"] == v1_script and restored["version"] == 3
    assert memp.json("history", str(match["memory_id"]))["history"][-1]["event"] == "reverted"


def test_adjustment_without_a_model_revises_offline(memp, tmp_path: Path) -> None:
    memp("ingest", str(EXAMPLES / "household.jsonl"))
    rid = _recall(memp, "clean a cup and put it in the coffee machine", "-k", "1")["recall_id"]
    run = write_jsonl(tmp_path / "failed.jsonl", [FAILED_RUN])
    report = memp.json("update", "--recall", rid, "--outcome", "failure", "-t", str(run))
    assert report["policy"] == "adjustment" and report["offline_revisions"] == 1
    (memory_id,) = report["revised"]
    script = memp.json("show", memory_id)["script"]
    assert "- `clean cup 1 with sinkbasin 1` did not work: Nothing happens." in script
    assert "Following this procedure failed on: clean a cup" in script


@pytest.mark.parametrize(
    "policy,outcome,added",
    [
        ("vanilla", "failure", 1),
        ("vanilla", "success", 1),
        ("validation", "failure", 0),
        ("validation", "success", 1),
        ("adjustment", "success", 1),
    ],
)
def test_policies_add_new_runs(memp, tmp_path: Path, policy: str, outcome: str, added: int) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    rid = _recall(memp, "restart apache", "-k", "2")["recall_id"]
    run = write_jsonl(tmp_path / "run.jsonl", [traj("restart apache after editing its config")])
    report = memp.json("update", "--recall", rid, "--outcome", outcome, "-t", str(run), "--policy", policy)
    assert len(report["added"]) == added and report["revised"] == {}
    stats = memp.json("stats")
    assert stats["memories"] == 5 + added
    if added:
        new = memp.json("show", str(report["added"][0]))
        assert new["outcome"] == outcome and new["task"] == "restart apache after editing its config"


def test_credit_and_success_estimate(memp) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"))
    target = _recall(memp, "fix the failing date parsing test", "-k", "1")["matches"][0]["memory_id"]
    for outcome in ("success", "success", "failure"):
        rid = _recall(memp, "fix the failing date parsing test", "-k", "1")["recall_id"]
        memp("update", "--recall", rid, "--outcome", outcome, "--policy", "validation")
    shown = memp.json("show", str(target))
    assert (shown["recalled"], shown["succeeded"], shown["failed"]) == (4, 2, 1)
    # Beta(1, 1) prior, plus the successful run it was built from, plus 2 successes and 1 failure.
    assert shown["success"]["mean"] == pytest.approx(4 / 6, abs=1e-4)
    assert 0 < shown["success"]["lower"] < 2 / 3 < shown["success"]["upper"] < 1
    by_score = memp.json("update", "--memory", str(target), "--score", "0.7", "--success-threshold", "0.6")
    assert by_score["outcome"] == "success" and by_score["credited"] == [target]


def test_update_errors(memp) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"))
    rid = _recall(memp, "fix a test")["recall_id"]
    for args, message in [
        ((), "name what was used"),
        (("--recall", rid), "say how it went"),
        (("--recall", "r-nope", "--outcome", "success"), "no recall with id r-nope"),
        (("--memory", "999", "--outcome", "success"), "no memory with id 999"),
    ]:
        result = memp("update", *args, ok=False)
        assert result.exit_code == 1 and message in result.stderr, (args, result.stderr)
    for args, option in [
        (("--recall", rid, "--outcome", "meh"), "'--outcome'"),
        (("--recall", rid, "--outcome", "success", "--policy", "hope"), "'--policy'"),
    ]:
        result = memp("update", *args, ok=False)
        assert result.exit_code == 2 and f"Invalid value for {option}" in result.stderr, (args, result.stderr)
    memp("update", "--recall", rid, "--outcome", "success")
    again = memp("update", "--recall", rid, "--outcome", "success", ok=False)
    assert "was reported already" in again.stderr
    assert memp.json("show", "1")["succeeded"] + memp.json("show", "2")["succeeded"] <= 3


def test_batched_updates_apply_every_n(memp, tmp_path: Path) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    memp("config", "update_every", "3")
    memp("config", "update_policy", "vanilla")
    assert memp.json("config") == {"update_policy": "vanilla", "update_every": "3"}
    added = []
    for i in range(4):
        rid = _recall(memp, f"task number {i}", "-k", "1")["recall_id"]
        run = write_jsonl(tmp_path / f"run{i}.jsonl", [traj(f"renew certificate {i}")])
        report = memp.json("update", "--recall", rid, "--outcome", "success", "-t", str(run))
        added.append(len(report["added"]))
        assert report["policy"] == "vanilla"
    assert added == [0, 0, 3, 0]
    flushed = memp.json("update", "--flush")
    assert len(flushed["added"]) == 1 and memp.json("stats")["memories"] == 9
    bad = memp("config", "update_policy", "yolo", ok=False)
    assert bad.exit_code == 2 and "update_policy must be one of" in bad.stderr


def test_utility_rank_sinks_memories_that_keep_failing(memp, tmp_path: Path) -> None:
    rows = [traj("deploy the web service to staging"), traj("deploy the web service to staging servers")]
    memp("ingest", str(write_jsonl(tmp_path / "d.jsonl", rows)), "--build", "trajectory")
    task = "deploy the web service to staging"
    top = _recall(memp, task, "-k", "1", "-p", "query")["matches"][0]["memory_id"]
    for _ in range(4):
        memp("update", "--memory", str(top), "--outcome", "failure", "--policy", "validation")
    by_similarity = _recall(memp, task, "-k", "2", "-p", "query")["matches"]
    assert by_similarity[0]["memory_id"] == top
    by_utility = _recall(memp, task, "-k", "2", "-p", "query", "--rank", "utility")["matches"]
    assert by_utility[0]["memory_id"] != top
    assert by_utility[0]["score"] > by_utility[1]["score"]
    assert by_utility[1]["similarity"] > by_utility[0]["similarity"]


def test_prune_plan_apply_restore_purge(memp, tmp_path: Path) -> None:
    memp("ingest", str(EXAMPLES))
    # That task's memory is of a failed run: recall hands it over as a warning, and reports blame it all the same.
    shown = _recall(memp, "make the slow integration test suite faster", "-k", "1")
    assert shown["matches"] == [] or shown["matches"][0]["outcome"] == "success"
    bad = shown["warnings"][0]["memory_id"]
    for _ in range(3):
        rid = _recall(memp, "make the slow integration test suite faster", "-k", "1")["recall_id"]
        memp("update", "--recall", rid, "--outcome", "failure", "--policy", "validation")
    dry = memp.json("prune")
    assert [(r["memory_id"], r["rule"]) for r in dry] == [(bad, "discard")]
    assert "succeeded 0 of 3" in dry[0]["reason"]
    assert memp.json("show", str(bad))["status"] == "active"

    memp("prune", "--apply")
    assert memp.json("show", str(bad))["status"] == "retired"
    gone = _recall(memp, "make the slow integration test suite faster", "-k", "16")
    assert bad not in [m["memory_id"] for m in gone["matches"] + gone["warnings"]]
    assert memp.json("history", str(bad))["history"][-1]["event"] == "retired"
    memp("restore", str(bad))
    back = _recall(memp, "make the slow integration test suite faster", "-k", "1")
    assert bad in [m["memory_id"] for m in back["warnings"]]
    memp("prune", "--apply")
    memp("prune", "--purge")
    assert memp.json("stats")["memories"] == 15
    assert memp("show", str(bad), ok=False).exit_code == 1


def test_prune_dedupe_merges_statistics(memp, tmp_path: Path) -> None:
    # The same task done twice the same way (other arguments), once another way, and an unrelated task.
    rows = [traj("water the garden plants"), traj("water the garden plants", actions=("look around", "act now")),
            traj("water the garden plants", actions=("open tap", "water")), traj("file the tax return")]
    memp("ingest", str(write_jsonl(tmp_path / "d.jsonl", rows)), "--build", "trajectory")
    a, b, _ = sorted(m["memory_id"] for m in memp.json("list") if m["task"] == "water the garden plants")
    memp("update", "--memory", str(a), "--outcome", "success", "--policy", "validation")
    plan_rows = memp.json("prune", "--dedupe", "0.95", "--no-discard")
    # The run that opened a tap follows another procedure: same task, not a duplicate.
    assert [(r["memory_id"], r["merge_into"], r["rule"]) for r in plan_rows] == [(b, a, "duplicate")]
    assert plan_rows[0]["task_similarity"] > 0.99 and plan_rows[0]["procedure_similarity"] == 1.0
    memp("prune", "--dedupe", "0.95", "--no-discard", "--apply")
    kept = memp.json("show", str(a))
    assert kept["succeeded"] == 1 and kept["status"] == "active"
    assert memp.json("history", str(b))["history"][-1]["event"] == "merged"


def test_prune_rules_as_pure_policy(tmp_path: Path) -> None:
    from memp_cli.ingest import IngestOptions, ingest

    store = open_store(tmp_path / "p.db")
    ingest(store, [str(EXAMPLES)], IngestOptions(build="trajectory"))
    memories = store.memories.list()
    later = datetime.now(timezone.utc) + timedelta(days=40)
    stale = plan(memories, Rules(discard=False, stale_days=30), now=later)
    assert len(stale) == 16 and all(r.rule == "stale" for r in stale)
    assert plan(memories, Rules(discard=False, stale_days=30)) == []
    capped = plan(memories, Rules(discard=False, max_memories=10))
    assert len(capped) == 6 and {r.rule for r in capped} == {"capacity"}
    # Failed runs rank lowest by their success estimate, so the cap retires them first.
    outcomes = {m.id: m.outcome for m in memories}
    assert sum(outcomes[r.memory_id] == "failure" for r in capped) == 4
    m = memories[0]
    m.recalled, m.succeeded, m.failed = 12, 0, 12
    bound = plan([m], Rules(discard=False, confident_below=0.3))
    assert bound[0].rule == "bound" and "upper 0.24" in bound[0].reason


def test_python_api(tmp_path: Path) -> None:
    from memp_cli import Memp

    with Memp(tmp_path / "api.db") as mem:
        assert mem.ingest(EXAMPLES / "devops.jsonl").added == 5
        result = mem.recall("nginx will not start", k=1)
        assert "nginx" in result.matches[0].memory.task
        assert mem.prompt(result).startswith(f'<procedural-memory recall_id="{result.id}">')
        many = mem.recall_many(["nginx will not start", "renew the certificate that expires"], k=1)
        assert [r.task for r in many] == ["nginx will not start", "renew the certificate that expires"]
        assert many[0].matches[0].memory.id == result.matches[0].memory.id and many[0].id != result.id
        report = mem.update(result.id, outcome="failure", trajectory=FAILED_RUN, policy="adjustment")
        assert list(report.revised.values()) == [2]
        memory_id = result.matches[0].memory.id
        assert mem.get(memory_id).failed == 1
        assert [h["event"] for h in mem.history(memory_id)] == ["built", "revised"]
        assert mem.revert(memory_id, 1) == 3
        assert mem.prune() == []
        assert mem.stats()["memories"] == 5


WORKER = """
import sys
from memp_cli import Memp
mem = Memp(sys.argv[1])
for i in range(int(sys.argv[2])):
    r = mem.recall("renew the certificate that expires", k=2, min_score=0)
    mem.update(r.id, outcome="success" if i % 2 else "failure", policy="validation")
"""


def test_concurrent_recall_and_update_lose_no_count(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES / "devops.jsonl"))
    db, procs, rounds = os.environ["MEMP_DB"], 8, 5  # a file or a database; $MEMP_SCHEMA goes to the workers too
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, db, str(rounds)]) for _ in range(procs)]
    assert [w.wait(timeout=300) for w in workers] == [0] * procs
    conn = open_store().db
    recalled, succeeded, failed = conn.execute(
        "SELECT sum(recalled), sum(succeeded), sum(failed) FROM memories"
    ).fetchone()
    assert recalled == procs * rounds * 2
    assert succeeded + failed == procs * rounds * 2
    assert failed == procs * 3 * 2 and succeeded == procs * 2 * 2
    assert conn.execute("SELECT count(*) FROM outcomes").fetchone()[0] == procs * rounds
