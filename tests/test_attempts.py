"""Successful and failed runs of one task: the success's script says what it did differently."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import procedure_json, write_jsonl

TASK = "the web app returns 502 after deploy; fix it"
FAILED = {"task": TASK, "outcome": "failure", "steps": [
    {"action": "docker compose build web", "observation": "<returncode>0</returncode>\nBuilt"},
    {"action": "docker compose up -d web", "observation": "<returncode>0</returncode>\nStarted"},
    {"action": "curl -sI localhost", "observation": "<returncode>0</returncode>\nHTTP/1.1 502 Bad Gateway"}]}
FIXED = {"task": TASK, "outcome": "success", "steps": [
    {"action": "docker compose logs web", "observation": "<returncode>0</returncode>\nError: DATABASE_URL not set"},
    {"action": "echo DATABASE_URL=postgres://db/app >> .env", "observation": "<returncode>0</returncode>"},
    {"action": "docker compose up -d web", "observation": "<returncode>0</returncode>\nStarted"},
    {"action": "curl -sI localhost", "observation": "<returncode>0</returncode>\nHTTP/1.1 200 OK"}]}


def _success(memp) -> dict:
    return next(m for m in memp.json("list") if m["outcome"] == "success")


def test_a_success_learns_from_failures_ingested_with_it_and_after_it(memp, tmp_path: Path) -> None:
    memp("ingest", str(write_jsonl(tmp_path / "first.jsonl", [FIXED])), "-m", "offline")
    assert "Unlike failed attempts" not in _success(memp)["script"]
    report = memp.json("ingest", str(write_jsonl(tmp_path / "later.jsonl", [FAILED])), "-m", "offline")
    assert report["contrasted"] == 1
    script = _success(memp)["script"]
    assert "- Unlike failed attempts at this task: At step 1 the success did `docker compose logs web` where the " \
           "failed attempt did `docker compose build web`" in script
    assert "Only failed attempts did: `docker compose build web`" in script
    # The steps are still the success's own, in order.
    assert script.index("1. docker compose logs") < script.index("2. echo DATABASE_URL") < script.index("Pitfalls:")
    history = memp.json("history", str(_success(memp)["memory_id"]))["history"]
    assert [h["event"] for h in history] == ["built", "contrasted"]
    # Nothing new: nothing changes.
    again = memp.json("ingest", str(write_jsonl(tmp_path / "again.jsonl", [FAILED, FIXED])), "-m", "offline")
    assert again["contrasted"] == 0


def test_failures_alone_or_successes_alone_are_left_as_they_are(memp, tmp_path: Path) -> None:
    other = {**FIXED, "task": "rotate the TLS certificate on the load balancer"}
    report = memp.json("ingest", str(write_jsonl(tmp_path / "r.jsonl", [FAILED, other])), "-m", "offline")
    assert report["contrasted"] == 0


def test_a_model_distils_from_the_group_of_attempts(memp, fake_chat, tmp_path: Path) -> None:
    fake_chat.queue(procedure_json(["build"]), procedure_json(["read the logs"]),
                    procedure_json(["read the logs first"], ["Unlike the failed runs, the logs were read first"]))
    report = memp.json("ingest", str(write_jsonl(tmp_path / "r.jsonl", [FAILED, FIXED])), "-m", "fake-chat")
    assert report["contrasted"] == 1
    prompt = fake_chat.prompts[-1].prompt
    assert "<failed_attempts>" in prompt and "docker compose build web" in prompt.split("<failed_attempts>")[1]
    shown = memp.json("show", str(_success(memp)["memory_id"]))
    assert "logs were read first" in shown["script"] and shown["prompt_version"] == "distill-v1+contrast"
    assert json.dumps(shown).count("Unlike the failed runs") == 1
