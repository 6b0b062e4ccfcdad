"""Claude Code hooks: installing into a settings file, and answering real-shaped hook payloads on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import traj, write_jsonl

DATA = Path(__file__).parent / "data" / "claude-code"
SESSION = DATA / "s-9f2c.jsonl"
THEIRS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(pytest:*)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./audit.sh"}]}],
        "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "date +%F"}]}],
    },
}


def prompt_payload(prompt: str, cwd: str = "/home/ana/dates") -> str:
    """Return the UserPromptSubmit payload Claude Code writes on the hook's stdin."""
    return json.dumps({
        "session_id": "0b7e6f4c-5a2d-4c1e-9d7a-3f1e2b4c5d6e",
        "transcript_path": "/home/ana/.claude/projects/-home-ana-dates/0b7e6f4c-5a2d-4c1e-9d7a-3f1e2b4c5d6e.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "UserPromptSubmit",
        "prompt": prompt,
    })


def end_payload(transcript: Path, session: str = "s-9f2c") -> str:
    """Return the SessionEnd payload Claude Code writes on the hook's stdin."""
    return json.dumps({
        "session_id": session, "transcript_path": str(transcript), "cwd": "/home/ana/dates",
        "permission_mode": "default", "hook_event_name": "SessionEnd", "reason": "prompt_input_exit",
    })


def commands(settings: Path, event: str) -> list[str]:
    data = json.loads(settings.read_text())
    return [h["command"] for group in data["hooks"].get(event, []) for h in group["hooks"]]


# -- install and uninstall ------------------------------------------------------------------------------------------


def test_install_merges_is_idempotent_and_uninstall_removes_only_memps(memp, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(THEIRS, indent=4))
    memp("hooks", "install", "claude-code", "--settings", str(settings))
    data = json.loads(settings.read_text())
    assert data["model"] == "opus" and data["permissions"] == THEIRS["permissions"]
    assert data["hooks"]["PreToolUse"] == THEIRS["hooks"]["PreToolUse"]
    (theirs, ours) = commands(settings, "UserPromptSubmit")
    assert theirs == "date +%F" and ours.endswith("hooks run user-prompt-submit")
    (end,) = commands(settings, "SessionEnd")
    assert end.endswith("hooks run session-end")
    assert data["hooks"]["SessionEnd"][0]["hooks"][0]["timeout"] > 0

    written = settings.read_bytes()
    again = memp("hooks", "install", "claude-code", "--settings", str(settings))
    assert settings.read_bytes() == written and "nothing changed" in again.stderr

    memp("hooks", "uninstall", "claude-code", "--settings", str(settings))
    assert json.loads(settings.read_text()) == THEIRS
    assert "no memp hooks" in memp("hooks", "uninstall", "claude-code", "--settings", str(settings)).stderr


def test_installing_with_other_options_updates_memps_entry_in_place(memp, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    memp("hooks", "install", "claude-code", "--settings", str(settings))
    memp("hooks", "install", "claude-code", "--settings", str(settings), "--db", str(tmp_path / "team.db"),
         "--outcome", "success")
    (end,) = commands(settings, "SessionEnd")
    assert f"--db {tmp_path / 'team.db'}" in end and "--outcome success" in end
    assert len(commands(settings, "UserPromptSubmit")) == 1
    memp("hooks", "uninstall", "claude-code", "--settings", str(settings))
    assert json.loads(settings.read_text()) == {}


def test_project_and_user_scopes(memp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "home-claude"))
    memp("hooks", "install", "claude-code", "--project")
    assert commands(tmp_path / ".claude" / "settings.json", "SessionEnd")
    memp("hooks", "install", "claude-code")
    assert commands(tmp_path / "home-claude" / "settings.json", "UserPromptSubmit")
    result = memp("hooks", "install", "claude-code", "--project", "--user", ok=False)
    assert result.exit_code == 1 and "choose one of" in result.stderr


def test_a_broken_settings_file_is_named_and_left_alone(memp, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{\n  "model": "opus",\n  "hooks": {\n}\n')
    result = memp("hooks", "install", "claude-code", "--settings", str(settings), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"memp: error: {settings}:5: invalid JSON")
    assert settings.read_text() == '{\n  "model": "opus",\n  "hooks": {\n}\n'
    assert not list(tmp_path.glob(".settings.json.*"))


# -- the UserPromptSubmit hook --------------------------------------------------------------------------------------


def test_prompt_gets_recalled_procedures_as_additional_context(memp) -> None:
    memp("ingest", str(SESSION), "-m", "offline")
    result = memp("hooks", "run", "user-prompt-submit",
                  input=prompt_payload("parse_date breaks on ISO dates ending in Z, please fix it"))
    assert result.exit_code == 0 and result.stderr == ""
    answer = json.loads(result.stdout)
    assert list(answer) == ["hookSpecificOutput"]
    assert answer["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
    context = answer["hookSpecificOutput"]["additionalContext"]
    assert context.startswith("<procedural-memory recall_id=") and "Edit: src/dates.py" in context
    recall_id = context.split('recall_id="')[1].split('"')[0]
    assert f"memp update --recall {recall_id} --outcome success" in context
    update = memp.json("update", "--recall", recall_id, "--outcome", "success")
    assert update["credited"] == [1]


@pytest.mark.parametrize(
    "stdin",
    [
        prompt_payload("what is the capital of Mongolia"),  # nothing fits
        prompt_payload("/compact"),  # a Claude Code command, not a task
        prompt_payload("   "),
        "this is not JSON",
        "[1, 2]",
        "",
    ],
)
def test_a_prompt_nothing_fits_or_a_bad_payload_prints_nothing_and_exits_0(memp, stdin: str) -> None:
    memp("ingest", str(SESSION), "-m", "offline")
    result = memp("hooks", "run", "user-prompt-submit", input=stdin)
    assert result.exit_code == 0 and result.stdout == ""


def test_a_prompt_before_any_memory_creates_no_store(memp, isolated: Path) -> None:
    result = memp("hooks", "run", "user-prompt-submit", input=prompt_payload("fix the date parser"))
    assert result.exit_code == 0 and result.stdout == ""
    assert not (isolated / "memp.db").exists()


# -- the SessionEnd hook, and the outcome of a session --------------------------------------------------------------


def test_session_end_in_a_real_subprocess_learns_the_session_as_unknown(memp, tmp_path: Path) -> None:
    """Run the very command `hooks install` wrote, through a shell, as Claude Code does."""
    settings = tmp_path / "settings.json"
    memp("hooks", "install", "claude-code", "--settings", str(settings), "--model", "offline")
    (command,) = commands(settings, "SessionEnd")
    done = subprocess.run(command, shell=True, input=end_payload(SESSION), capture_output=True, text=True, check=False,
                          env=os.environ, timeout=120)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert "1 added" in done.stderr and "1 unknown" in done.stderr
    (memory,) = memp.json("list")
    assert memory["outcome"] == "unknown" and memory["source"]["id"] == "s-9f2c"
    assert memory["success"]["mean"] == 0.5

    (prompt,) = commands(settings, "UserPromptSubmit")
    asked = subprocess.run(prompt, shell=True, input=prompt_payload("fix parse_date for ISO dates with a Z suffix"),
                           capture_output=True, text=True, check=False, env=os.environ, timeout=120)
    assert asked.returncode == 0, asked.stderr
    assert '"hookEventName": "UserPromptSubmit"' in asked.stdout and 'outcome=\\"unknown\\"' in asked.stdout

    again = subprocess.run(command, shell=True, input=end_payload(SESSION), capture_output=True, text=True, check=False,
                           env=os.environ, timeout=120)
    assert again.returncode == 0 and "0 added, 1 already stored" in again.stderr


def test_unknown_ranks_below_a_known_success_until_someone_reports(memp, tmp_path: Path) -> None:
    memp("ingest", str(SESSION), "-m", "offline", "--outcome", "unknown", "--build", "trajectory")
    same_task = traj("parse_date fails on ISO dates with a Z suffix; fix it and make the tests pass",
                     actions=("sed -i s/Z/+00:00/ src/dates.py", "pytest -q"))
    memp("ingest", str(write_jsonl(tmp_path / "ok.jsonl", [same_task])), "-m", "offline", "--build", "trajectory")
    unknown, success = sorted(memp.json("list"), key=lambda m: m["outcome"] != "unknown")
    assert (unknown["outcome"], success["outcome"]) == ("unknown", "success")
    task = "parse_date fails on ISO dates with a Z suffix"
    ranked = memp.json("recall", task, "--rank", "utility", "-p", "query")["matches"]
    assert [m["memory_id"] for m in ranked] == [success["memory_id"], unknown["memory_id"]]
    for _ in range(3):
        memp("update", "--memory", str(unknown["memory_id"]), "--outcome", "success")
    ranked = memp.json("recall", task, "--rank", "utility", "-p", "query")["matches"]
    assert ranked[0]["memory_id"] == unknown["memory_id"]


def test_an_outcome_report_cannot_say_unknown(memp) -> None:
    result = memp("update", "--memory", "1", "--outcome", "unknown", ok=False)
    assert result.exit_code == 2 and "Invalid value" in result.stderr


def test_session_end_with_a_judge_model_takes_its_grade(memp, fake_chat) -> None:
    fake_chat.queue(json.dumps({"score": 0.2, "reason": "the tests still fail"}))
    result = memp("hooks", "run", "session-end", "--judge-model", "fake-chat", "-m", "offline",
                  input=end_payload(SESSION))
    assert result.exit_code == 0, result.stderr
    (memory,) = memp.json("list")
    assert memory["outcome"] == "failure" and memory["outcome_score"] == 0.2


@pytest.mark.parametrize("trouble", ["chat-only", "missing", "no-path"])
def test_session_end_that_cannot_learn_says_why_and_exits_0(memp, tmp_path: Path, isolated: Path, trouble) -> None:
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"type": "user", "sessionId": "c1", "uuid": "a", "message": {"role": "user", "content": "what does WAL mean?"}},
        {"type": "assistant", "sessionId": "c1", "uuid": "b",
         "message": {"role": "assistant", "content": [{"type": "text", "text": "Write-ahead logging."}]}},
    ])
    payload = {"chat-only": end_payload(chat, "c1"), "missing": end_payload(tmp_path / "gone.jsonl"),
               "no-path": json.dumps({"session_id": "x", "hook_event_name": "SessionEnd"})}[trouble]
    result = memp("hooks", "run", "session-end", "-m", "offline", input=payload)
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.startswith("memp: hook session-end: ")
    assert {"chat-only": "no user task or no tool use", "missing": "no such transcript",
            "no-path": "no transcript_path"}[trouble] in result.stderr
    if (isolated / "memp.db").exists():
        assert memp.json("stats")["memories"] == 0


def test_hooks_help_starts_fast_without_domain_imports() -> None:
    code = "import sys; from memp_cli.cli import app; from memp_cli.cli import hooks; print('memp_cli.recall' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
