"""The logs coding agents and agent benchmarks write: Claude Code transcripts, Codex rollouts, tau-bench results.

The fixtures in tests/data/ are written by hand in the documented shapes: every record type Claude Code writes, a
subagent sidechain inline and one in its own file, a Codex rollout with shell, apply_patch and exec_command calls,
and tau-bench runs with rewards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memp_cli import formats
from memp_cli.errors import InputError
from memp_cli.formats import claude_code, codex, tau_bench

DATA = Path(__file__).parent / "data"
CLAUDE = DATA / "claude-code" / "s-9f2c.jsonl"
CLAUDE_SUBAGENT_FILE = DATA / "claude-code" / "s-b71e.jsonl"
CODEX = next((DATA / "codex").glob("rollout-*.jsonl"))
TAU = DATA / "tau-bench" / "retail-results.json"


def runs(path: Path, fmt: str = "auto") -> list[Any]:
    return list(formats.read(formats.Source(path, str(path)), fmt))


def test_every_claude_code_record_type_is_in_the_fixture() -> None:
    kinds = {json.loads(line)["type"] for line in CLAUDE.read_text().splitlines()}
    assert kinds >= {"user", "assistant", "system", "summary", "file-history-snapshot", "progress", "last-prompt",
                     "queue-operation", "ai-title", "permission-mode"}
    assert json.loads(CLAUDE.read_text().splitlines()[0])["type"] == "summary"


def test_claude_code_transcript_reads_with_the_steps_that_matter() -> None:
    assert formats.detect(formats.Source(CLAUDE, "x")) == "claude-code"
    (run,) = runs(CLAUDE)
    assert run.task == "parse_date fails on ISO dates with a Z suffix; fix it and make the tests pass"
    actions = [s.action for s in run.steps]
    assert actions[0] == "pytest -q tests/test_dates.py" and actions[1] == "Read: src/dates.py"
    assert actions[2].startswith("Task (Explore): Find other date parsing")
    assert actions[3] == "subagent: Grep: fromisoformat in . (*.py)"
    assert actions[4] == (
        'Edit: src/dates.py\n-     return datetime.fromisoformat(text)\n+     if text.endswith("Z"):\n'
        '+         text = text[:-1] + "+00:00"\n+     return datetime.fromisoformat(text)'
    )
    assert actions[5] == "Write: tests/test_dates_z.py (5 lines)" and actions[6] == "pytest -q tests/"
    assert len(actions) == 7  # the slash command, the caveat, thinking and housekeeping are no steps
    first, last = run.steps[0], run.steps[-1]
    assert first.thought == "Let me run the tests first."
    assert first.observation.startswith("[exit 1] F.\nFAILED tests/test_dates.py::test_iso_z")
    assert last.observation == "[exit 0] ...\n3 passed in 0.10s"
    assert run.steps[2].observation == "Only src/dates.py:4 parses ISO dates."
    assert run.outcome == "success" and run.source_id == "s-9f2c"  # no outcome recorded: ingest's default
    assert run.metadata == {"session_id": "s-9f2c", "project": "dates", "git_branch": "fix-dates"}


def test_a_subagent_run_in_its_own_file_comes_in_after_the_task_that_started_it(tmp_path: Path) -> None:
    (run,) = runs(CLAUDE_SUBAGENT_FILE)
    assert [s.action for s in run.steps] == [
        "Task (general-purpose): Bump version\nSet the version to 1.4.0 in pyproject.toml",
        'subagent: Edit: pyproject.toml\n- version = "1.3.2"\n+ version = "1.4.0"',
        "git tag v1.4.0",
    ]
    alone = tmp_path / "s-b71e.jsonl"
    shutil.copy(CLAUDE_SUBAGENT_FILE, alone)  # the transcript without its subagents folder
    assert len(next(iter(runs(alone))).steps) == 2


def test_a_transcript_opening_with_any_housekeeping_line_is_detected(tmp_path: Path) -> None:
    lines = CLAUDE.read_text().splitlines()
    conversation = [line for line in lines if json.loads(line)["type"] in ("user", "assistant")]
    for opening in ('{"type": "pr-link", "url": "https://example.com/pr/1"}',
                    '{"type": "ai-title", "aiTitle": "Fix dates"}', '{"type": "mode", "mode": "default"}'):
        path = tmp_path / "t.jsonl"
        path.write_text("\n".join([opening, *conversation]) + "\n")
        assert formats.detect(formats.Source(path, "t")) == "claude-code"
        assert len(runs(path, "claude-code")[0].steps) == 7


def test_claude_code_ingests_with_the_right_steps(memp) -> None:
    report = memp.json("ingest", str(DATA / "claude-code"), "--build", "trajectory", "--outcome", "unknown")
    assert report["added"] == 3 and report["outcomes"] == {"unknown": 3}  # two sessions, one subagent file
    tasks = {m["task"] for m in memp.json("list")}
    assert "bump the version to 1.4.0 and tag it" in tasks and "Set the version to 1.4.0 in pyproject.toml" in tasks


def test_codex_rollout_reads_commands_patches_and_exit_codes() -> None:
    assert formats.detect(formats.Source(CODEX, "x")) == "codex"
    (run,) = runs(CODEX)
    assert run.task == "add a --dry-run flag to the cleanup script"
    actions = [s.action for s in run.steps]
    assert actions[0] == "sed -n 1,40p scripts/cleanup.py"
    assert actions[1].startswith("apply_patch: Update scripts/cleanup.py\n*** Begin Patch")
    assert actions[2] == "pytest -q tests/test_cleanup.py"
    assert run.steps[0].thought == "**Looking at the script**"
    assert run.steps[0].observation.startswith("[exit 0] import argparse")
    assert run.steps[2].thought == "Now I'll run the tests."
    assert run.steps[2].observation == "[exit 1] E   AssertionError: dry run deleted files\n1 failed in 0.31s"
    assert run.metadata["model"] == "gpt-5-codex" and run.metadata["project"] == "shop"
    assert run.source_id == "019a2d7a-41c4-78b1-b7cc-a45d62a89cd5"


def test_tau_bench_results_ingest_with_the_reward_as_outcome(memp) -> None:
    assert formats.detect(formats.Source(TAU, "x")) == "tau-bench"
    report = memp.json("ingest", str(TAU), "--build", "trajectory", "-m", "offline")
    assert report["added"] == 2 and report["outcomes"] == {"success": 1, "failure": 1}
    by_task = {m["task"]: m for m in memp.json("list")}
    won = by_task["Hi, I want to cancel my order #W2378156, I don't need it anymore."]
    assert won["outcome"] == "success" and won["outcome_score"] == 1.0 and won["source"]["id"] == "3-0"
    assert '> cancel_pending_order({"order_id": "#W2378156", "reason": "no longer needed"})' in won["trajectory"]
    lost = by_task["I'd like to exchange the desk lamp from order #W6390527 for a brighter one."]
    assert lost["outcome"] == "failure" and "non-pending order cannot be cancelled" in lost["trajectory"]


def test_tau_bench_partial_reward_counts_by_the_threshold(memp, tmp_path: Path) -> None:
    data = json.loads(TAU.read_text())
    data[1]["reward"] = 0.5
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    report = memp.json("ingest", str(path), "--build", "trajectory", "--success-threshold", "0.5")
    assert report["outcomes"] == {"success": 2}


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("r.jsonl", '{"timestamp": "t", "type": "session_meta", "payload": {"id": "x"}}\n', "no user task"),
        ("s.jsonl", ('{"type": "summary", "summary": "s", "leafUuid": "u"}\n{"type": "user", "sessionId": "x", '
                     '"message": "hi"}\n'), "s.jsonl:2: a user record needs a 'message' object"),
        ("t.json", '[{"task_id": 1, "reward": "high", "traj": []}]', "runs[0]: 'reward' must be a number"),
        ("u.json", '[{"task_id": 1, "reward": 1, "traj": [{"content": "x"}]}]', "runs[0]: messages[0]"),
    ],
)
def test_bad_agent_logs_fail_with_one_line_naming_the_file(memp, tmp_path: Path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = memp("ingest", str(path), ok=False)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"memp: error: {path}") and message in line


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "payload", "message", "content", "role", "sessionId", "isSidechain", "reward",
                         "traj", "tool_calls", "name", "input", "id", "tool_use_id", "call_id", "arguments", "text",
                         "output", "toolUseResult", "agentId", "task_id"]) | st.text(max_size=4),
        inner, max_size=5,
    ),
    max_leaves=20,
)
SHAPED = st.fixed_dictionaries(
    {"type": st.sampled_from(["user", "assistant", "summary", "session_meta", "response_item", "event_msg"])},
    optional={"payload": JSON, "message": JSON, "sessionId": st.text(max_size=3), "timestamp": st.just("t")},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(SHAPED | JSON, min_size=1, max_size=6), document=JSON)
def test_new_adapters_yield_records_or_one_input_error(tmp_path: Path, lines: list[Any], document: Any) -> None:
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    doc = tmp_path / "h.json"
    doc.write_text(json.dumps([{"reward": 1, "traj": document}, document]))
    for module, path in ((claude_code, jsonl), (codex, jsonl), (tau_bench, doc)):
        try:
            for run in module.read(formats.Source(path, str(path))):
                assert run.task and run.steps and all(isinstance(s.action, str) for s in run.steps)
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
