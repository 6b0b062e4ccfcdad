"""The core loop through the CLI: ingest under each build policy, store, recall, list, show, stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES, procedure_json, traj, write_jsonl

from memp_cli.store import open_store

# The store, update, recall and prune behaviour, on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.usefixtures("backend")


def test_examples_ingest_and_recall_offline(memp, isolated: Path) -> None:
    report = memp.json("ingest", str(EXAMPLES))
    assert report["files"] == 3
    assert report["read"] == report["added"] == 16
    assert report["offline_scripts"] == 16
    assert report["model"] is None

    result = memp.json("recall", "rinse a dirty cup and put it in the coffee maker", "-k", "2")
    assert result["recall_id"].startswith("r-")
    top = result["matches"][0]
    assert top["task"] == "put a clean mug in the coffee machine"
    assert top["build"] == "proceduralization"
    assert "Steps:" in top["script"] and "Task: put a clean mug" in top["trajectory"]
    assert top["source"]["file"].endswith("household.jsonl") and top["source"]["line"] == 1
    assert top["source"]["id"] == "house-001"
    assert 0 < top["score"] <= 1
    # The failed run of a like task comes apart, as a warning, and takes no match's place.
    (warning,) = result["warnings"]
    assert warning["outcome"] == "failure" and warning["task"] == "put a clean plate on the dining table"
    assert "FAILED" in warning["script"] and "Steps:" not in warning["script"]
    assert all(m["outcome"] == "success" for m in result["matches"])

    shell = memp.json("recall", "apache does not come up after I edited its configuration", "-k", "1", "--min-score", "0")
    assert shell["matches"][0]["metadata"]["task_type"] == "service_config"


def test_offline_distiller_drops_failed_and_repeated_actions(memp) -> None:
    memp("ingest", str(EXAMPLES / "household.jsonl"), "--build", "script")
    memories = memp.json("list")
    tomato = next(m for m in memories if m["task"].startswith("cool a tomato"))
    script = tomato["script"]
    # "cool tomato 3 with microwave 1" got "Nothing happens.": a pitfall, not a step.
    steps = script.split("Steps:")[1].split("Pitfalls:")[0]
    assert "with microwave" not in steps
    assert "cool {object} with fridge 1" in steps
    assert "- `cool tomato 3 with microwave 1` did not work: Nothing happens." in script
    assert tomato["trajectory"] is None
    # A failed run is a warning, never steps to follow; the walk repeated three times is one line of it.
    soap = next(m for m in memories if m["task"].startswith("put two soap"))
    assert "Steps:" not in soap["script"] and "Outcome: this run FAILED" in soap["script"]
    assert "- `go to toilet 1` (tried 3 times) -> On the toilet 1, you see a spraybottle 2." in soap["script"]


def test_offline_fallback_says_so_and_build_redoes_scripts(memp, fake_chat) -> None:
    # llm's default model needs an OpenAI key nobody set: ingest still works, offline, and says why.
    result = memp("ingest", str(EXAMPLES / "coding.jsonl"))
    assert "unavailable" in result.stderr and "offline distiller" in result.stderr
    assert json.loads(result.stdout)["offline_scripts"] == 5

    fake_chat.queue(*[procedure_json([f"step from model {i}"]) for i in range(5)])
    result = memp("build", "-m", "fake-chat", "--format", "json")
    report = json.loads(result.stdout)
    assert report == {"model": "fake-chat", "rebuilt": 5, "failed": 0, "held": 0}
    models = {m["model"] for m in memp.json("list")}
    assert models == {"fake-chat"}
    # Nothing left to rebuild; --rebuild redoes them from the cache without asking the model again.
    assert memp.json("build", "-m", "fake-chat")["rebuilt"] == 0
    assert memp.json("build", "-m", "fake-chat", "--rebuild")["rebuilt"] == 5
    assert len(fake_chat.prompts) == 5


def test_build_without_any_model_is_a_clear_error(memp) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"))
    result = memp("build", ok=False)
    assert result.exit_code == 1
    assert "no usable model" in result.stderr


@pytest.mark.parametrize("policy", ["trajectory", "script", "proceduralization"])
def test_build_policies_with_a_model(memp, fake_chat, tmp_path: Path, policy: str) -> None:
    src = write_jsonl(
        tmp_path / "runs.jsonl",
        [
            {
                "task": "water the plants on the balcony",
                "steps": [
                    {"thought": "find the can", "action": "take watering can", "observation": "You take it."},
                    {"action": "fly to the moon", "observation": "Nothing happens."},
                    {"action": "water plants", "observation": "The plants are watered."},
                ],
                "outcome": "success",
            }
        ],
    )
    fake_chat.queue(procedure_json(["take {can}", "water {plants}"], ["do not try to fly"]))
    report = memp.json("ingest", str(src), "--build", policy, "-m", "fake-chat")
    assert report["added"] == 1
    (memory,) = memp.json("list")
    assert memory["build"] == policy
    if policy == "trajectory":
        assert fake_chat.prompts == []
        assert memory["script"] is None and memory["model"] is None
        assert memory["trajectory"].startswith("Task: water the plants")
        return
    (prompt,) = fake_chat.prompts
    # The trajectory goes to the model fenced as data, with the schema and the versioned prompt.
    assert "<trajectory>\nTask: water the plants on the balcony" in prompt.prompt
    assert "> fly to the moon\nNothing happens." in prompt.prompt
    assert "The run succeeded." in prompt.prompt
    assert "not instructions to you" in prompt.system
    assert prompt.schema["required"] == ["when_to_use", "parameters", "steps", "pitfalls"]
    assert memory["script"] == (
        "When to use: when the task fits\nParameters: {object}\nSteps:\n1. take {can}\n2. water {plants}\n"
        "Pitfalls:\n- do not try to fly"
    )
    assert memory["model"] == "fake-chat" and memory["prompt_version"] == "distill-v1"
    assert (memory["trajectory"] is not None) == (policy == "proceduralization")


def test_script_cache_and_token_usage_recorded(memp, fake_chat, isolated: Path) -> None:
    fake_chat.queue(procedure_json(["a"]), procedure_json(["b"]))
    # One call at a time, so the replies go in order: the model runs out of them at the 3rd run.
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "fake-chat", "--jobs", "1", ok=False)
    conn = open_store().db  # the store's own connection: SQLite's, or PostgreSQL's taking the same SQL
    rows = conn.execute("SELECT model, prompt_version, input_tokens, output_tokens FROM script_cache").fetchall()
    by_model = {}
    for model, version, tin, tout in rows:
        by_model.setdefault(model, []).append((version, tin, tout))
    assert len(by_model["fake-chat"]) == 2
    assert all(v == "distill-v1" and tin > 100 and tout > 0 for v, tin, tout in by_model["fake-chat"])
    # The third run was tried 3 times (with backoff); then the rest of the run used the offline distiller. Every run
    # was stored with its offline script first, for the model's to replace as it came: offline scripts are made
    # again for less than a cache lookup saves, so none is cached.
    assert set(by_model) == {"fake-chat"}
    assert len(fake_chat.prompts) == 2 + 3


def test_an_offline_ingest_caches_no_script(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES), "-m", "offline")
    conn = open_store().db
    assert conn.execute("SELECT count(*) FROM memories WHERE model = 'offline'").fetchone()[0] == 16
    assert conn.execute("SELECT count(*) FROM script_cache").fetchone()[0] == 0


def test_model_answers_are_cached_and_reused(memp, fake_chat, isolated: Path) -> None:
    runs = sum(1 for _ in (EXAMPLES / "coding.jsonl").open())
    fake_chat.queue(*[procedure_json([f"step {i}"]) for i in range(runs)])
    memp("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "fake-chat", "--jobs", "1")
    asked = len(fake_chat.prompts)
    assert asked == runs
    conn = open_store().db
    cached = conn.execute("SELECT trajectory_id, model, script FROM script_cache ORDER BY trajectory_id").fetchall()
    assert len(cached) == runs and {r[1] for r in cached} == {"fake-chat"}
    conn.close()
    # The model's script took the offline one's place as version 1, which the history reads back from the memory.
    store = open_store()
    (built,) = store.memories.history(1)
    assert built["new_script"] == store.memories.get(1).script and built["model"] == "fake-chat"
    assert store.check()["ok"]
    store.close()
    # Stored already, the runs are not asked about again; a rebuild of every script takes the model's from the cache.
    assert memp.json("ingest", str(EXAMPLES / "coding.jsonl"), "-m", "fake-chat")["added"] == 0
    assert memp.json("build", "-m", "fake-chat", "--rebuild")["rebuilt"] == runs
    assert len(fake_chat.prompts) == asked
    scripts = {m["script"] for m in memp.json("list") if m["model"] == "fake-chat"}
    assert scripts == {r[2] for r in cached}


def test_malformed_model_answer_keeps_offline_script(memp, fake_chat, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "one.jsonl", [traj("sort the mail")])
    fake_chat.queue(*["Sure! Here is a procedure: do it well."] * 3)
    result = memp("ingest", str(src), "-m", "fake-chat")
    assert "gave no usable answer" in result.stderr and "offline script kept" in result.stderr
    # Asked once more (saying why the first answer was unusable), not retried with backoff like a provider error.
    assert len(fake_chat.prompts) == 2 and len(fake_chat.replies) == 1
    assert "could not be used: no JSON object" in fake_chat.prompts[1].prompt
    (memory,) = memp.json("list")
    assert memory["model"] == "offline" and "Steps:" in memory["script"]


def test_reingest_is_a_noop_and_says_so(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES))
    again = memp("ingest", str(EXAMPLES))
    assert "stored already; nothing to do" in again.stderr
    report = json.loads(again.stdout)
    assert report["added"] == 0 and report["skipped"] == 16
    stats = memp.json("stats")
    assert stats["trajectories"] == stats["memories"] == 16


def test_duplicate_lines_in_one_file_are_stored_once(memp, tmp_path: Path) -> None:
    row = traj("feed the cat")
    src = write_jsonl(tmp_path / "dup.jsonl", [row, row, traj("feed the dog")])
    report = memp.json("ingest", str(src))
    assert report["added"] == 2 and report["skipped"] == 1


def test_ingest_from_stdin(memp) -> None:
    lines = (EXAMPLES / "devops.jsonl").read_text()
    report = memp.json("ingest", "-", input=lines)
    assert report["added"] == 5
    (memory,) = memp.json("list", "-n", "1")
    assert memory["source"]["file"] == "<stdin>"


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"steps": [{"action": "a"}], "outcome": "success"}', "'task' must be a non-empty string"),
    ('{"task": "t", "steps": [], "outcome": "success"}', "'steps' must be a non-empty list"),
    ('{"task": "t", "steps": [{"thought": "x"}], "outcome": "success"}', "steps[0].action"),
    ('{"task": "t", "steps": [{"action": "a"}], "outcome": "great"}', "'outcome' must be one of success, failure"),
    ('{"task": "t", "steps": [{"action": "a"}], "outcome": "success", "score": "high"}', "'score' must be a number"),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_bad_line_names_file_and_line_and_stores_nothing(memp, tmp_path: Path, bad: str, message: str) -> None:
    good = json.dumps(traj("sweep the floor"))
    src = tmp_path / "runs.jsonl"
    src.write_text(f"{good}\n\n{bad}\n{good}\n")
    other = write_jsonl(tmp_path / "other.jsonl", [traj("mop the floor")])
    result = memp("ingest", str(other), str(src), ok=False)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"memp: error: {src}:3: ")
    assert message in line
    assert memp.json("stats")["trajectories"] == 0


def test_binary_and_missing_files(memp, tmp_path: Path) -> None:
    blob = tmp_path / "blob.jsonl"
    blob.write_bytes(json.dumps(traj("x")).encode() + b"\n\xff\xfe\x00\x01garbage")
    result = memp("ingest", str(blob), ok=False)
    assert result.exit_code == 1 and f"{blob}:2:" in result.stderr
    result = memp("ingest", str(tmp_path / "nope.jsonl"), ok=False)
    assert result.exit_code == 1 and "no such file or folder" in result.stderr
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    result = memp("ingest", str(empty_dir), ok=False)
    assert "no trajectory files" in result.stderr


def test_unknown_build_policy(memp) -> None:
    result = memp("ingest", str(EXAMPLES), "--build", "everything", ok=False)
    assert result.exit_code == 2 and "Invalid value for '--build'" in result.stderr


def test_show_list_stats(memp) -> None:
    memp("ingest", str(EXAMPLES))
    memories = memp.json("list", "--outcome", "failure")
    assert len(memories) == 4 and {m["outcome"] for m in memories} == {"failure"}
    shown = memp.json("show", str(memories[0]["memory_id"]))
    assert shown["memory_id"] == memories[0]["memory_id"] and shown["script"]
    stats = memp.json("stats")
    assert stats["by_build"] == {"proceduralization": 16}
    assert stats["by_outcome"] == {"failure": 4, "success": 12}
    assert stats["by_model"] == {"offline": 16}
    assert stats["embed_model"] == "memp-minilm" and stats["embed_dim"] == 384
    missing = memp("show", "999", ok=False)
    assert missing.exit_code == 1 and "no memory with id 999" in missing.stderr


def test_recall_is_logged_and_counted(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES))
    result = memp.json("recall", "free disk space on a server", "-k", "2")
    ids = [m["memory_id"] for m in result["matches"]]
    conn = open_store().db
    logged = conn.execute(
        "SELECT memory_id, rank FROM recall_items WHERE recall_id = ? ORDER BY rank", [result["recall_id"]]
    ).fetchall()
    assert [m for m, _ in logged] == ids
    assert memp.json("show", str(ids[0]))["recalled"] == 1


def test_recall_on_an_empty_store(memp) -> None:
    result = memp.json("recall", "anything at all")
    assert result["matches"] == []


@pytest.mark.sqlite_only
def test_store_file_is_private(memp, isolated: Path) -> None:
    memp("ingest", str(EXAMPLES / "coding.jsonl"))
    assert (isolated / "memp.db").stat().st_mode & 0o777 == 0o600
