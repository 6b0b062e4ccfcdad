"""Claude Code sessions, malformed files of every format, outcomes, judging, keep-best and redaction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import traj, write_jsonl


def _claude_session(path: Path, session: str = "s-1") -> Path:
    rows = [
        {"type": "summary", "summary": "Fix flaky test", "leafUuid": "u0"},
        {"type": "user", "sessionId": session, "message": {"role": "user", "content": "make the flaky test_sync pass"}},
        {
            "type": "assistant",
            "sessionId": session,
            "message": {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me run it first."},
                    {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "pytest -k test_sync"}},
                ],
            },
        },
        {
            "type": "user",
            "sessionId": session,
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1 failed: timeout after 1s"}],
            },
        },
        {
            "type": "assistant",
            "sessionId": session,
            "message": {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t2", "name": "Edit", "input": {"file_path": "tests/t.py"}}],
            },
        },
        {
            "type": "user",
            "sessionId": session,
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "ok"}]},
        },
    ]
    return write_jsonl(path, rows)


def test_claude_code_session(memp, tmp_path: Path) -> None:
    src = _claude_session(tmp_path / "session.jsonl")
    report = memp.json("ingest", str(src), "--build", "trajectory", "--outcome", "failure")
    assert report["added"] == 1 and report["outcomes"] == {"failure": 1}
    (memory,) = memp.json("list")
    assert memory["task"] == "make the flaky test_sync pass"
    # No is_error on the result: Claude Code marks a Bash command that exits non-zero with one.
    assert "Thought: Let me run it first.\n> pytest -k test_sync\n[exit 0] 1 failed: timeout after 1s" in memory["trajectory"]
    assert "> Edit: tests/t.py\nok" in memory["trajectory"]
    assert memory["source"]["id"] == "s-1"


def test_openai_chat_jsonl_with_tool_calls(memp, tmp_path: Path) -> None:
    record = {
        "id": "run-7",
        "messages": [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": "list the files in /srv"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "function": {"name": "bash", "arguments": '{"command": "ls /srv"}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "app data"},
        ],
    }
    src = write_jsonl(tmp_path / "chats.jsonl", [record])
    outcomes = tmp_path / "grades.json"
    outcomes.write_text(json.dumps({"run-7": 0.4}))
    report = memp.json(
        "ingest", str(src), "--outcomes-file", str(outcomes), "--success-threshold", "0.3", "--build", "trajectory"
    )
    assert report["outcomes"] == {"success": 1}
    (memory,) = memp.json("list")
    assert memory["outcome_score"] == 0.4
    assert "> ls /srv\napp data" in memory["trajectory"]


MALFORMED = [
    ("truncated.json", '[{"from": "human", "value": "Your task is to: x"}, {"from": "gpt", "val', "invalid JSON", 1),
    ("types.json", '[{"from": "human", "value": "Your task is to: x"},\n {"from": "gpt", "value": 7}]', "'value'", None),
    ("empty.jsonl", "", "empty file", None),
    ("wrong.jsonl", '{"task": "t", "steps": "all of them", "outcome": "success"}\n', "'steps' must be", 1),
    ("chat.jsonl", '{"messages": [{"content": "no role"}]}\n', "messages[0] must be an object with a 'role'", 1),
    ("session.jsonl", '{"type": "user", "sessionId": "x", "message": {"role": "user", "content": []}}\n', "no user task", 1),
    (
        "traj.traj",
        '{"trajectory": [{"action": 5}], "history": [{"role": "user", "content": "ISSUE:\\nbug"}]}',
        "trajectory[0] needs a string 'action'",
        None,
    ),
    ("nohistory.traj", '{"trajectory": [{"action": "ls"}], "history": []}', "no user message", None),
    ("log.txt", "Action: reset\nObservation: nothing to see\n", "no instruction or no action", 1),
]


@pytest.mark.parametrize("name,content,message,line", MALFORMED)
def test_malformed_file_of_each_format(memp, tmp_path: Path, name: str, content: str, message: str, line) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [traj("fine run")])
    bad = tmp_path / name
    bad.write_text(content)
    result = memp("ingest", str(good), str(bad), ok=False)
    assert result.exit_code == 1
    (err,) = result.stderr.strip().splitlines()
    where = f"{bad}:{line}: " if line else f"{bad}: "
    assert err.startswith(f"memp: error: {where}"), err
    assert message in err
    assert memp.json("stats")["trajectories"] == 0


def test_binary_and_huge_line(memp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tmp_path / "blob.json"
    blob.write_bytes(b'{"a":\n 1, \x00\x01\x02}')
    result = memp("ingest", str(blob), ok=False)
    assert f"{blob}:2: binary data" in result.stderr
    from memp_cli import formats

    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1000)
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps(traj("ok")) + "\n" + json.dumps(traj("x" * 5000)) + "\n")
    result = memp("ingest", str(huge), ok=False)
    assert f"{huge}:2: line longer than" in result.stderr
    assert memp.json("stats")["trajectories"] == 0


JUDGE = (
    f"{sys.executable} -c \"import json,sys; t=json.load(sys.stdin); "
    "print('note: judging'); print(min(1.0, len(t['steps']) / 4))\""
)


def test_judge_command_scores_and_keep_best(memp, tmp_path: Path) -> None:
    rows = [
        traj("pack the suitcase", "failure", actions=("a",)),
        traj("pack the suitcase", "failure", actions=("a", "b", "c")),
        traj("pack the suitcase", "failure", actions=("a", "b", "c", "d")),
        traj("wash the car", "failure", actions=("a", "b")),
    ]
    src = write_jsonl(tmp_path / "runs.jsonl", rows)
    report = memp.json(
        "ingest", str(src), "--judge-cmd", JUDGE, "--keep-best", "1", "--success-threshold", "0.75", "--build",
        "trajectory",
    )
    assert report["judged"] == 4 and report["added"] == 2 and report["dropped"] == 2
    by_task = {m["task"]: m for m in memp.json("list")}
    assert by_task["pack the suitcase"]["outcome_score"] == 1.0
    assert by_task["pack the suitcase"]["outcome"] == "success"  # the judge decides, by the threshold
    assert by_task["wash the car"]["outcome_score"] == 0.5 and by_task["wash the car"]["outcome"] == "failure"
    assert by_task["wash the car"]["metadata"]["judge"].startswith("cmd:")
    # Already stored runs are not judged again.
    assert memp.json("ingest", str(src), "--judge-cmd", JUDGE)["judged"] == 2


def test_judge_command_failure_stores_nothing(memp, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "runs.jsonl", [traj("a"), traj("b")])
    result = memp("ingest", str(src), "--judge-cmd", "echo not-a-number", ok=False)
    assert result.exit_code == 1 and f"judge command gave no score for {src}:1" in result.stderr
    result = memp("ingest", str(src), "--judge-cmd", "exit 3", ok=False)
    assert "judge command exited 3" in result.stderr
    assert memp.json("stats")["trajectories"] == 0


def test_judge_model(memp, fake_chat, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "runs.jsonl", [traj("fold the laundry")])
    fake_chat.queue('{"score": 0.9, "reason": "all folded"}')
    report = memp.json("ingest", str(src), "--judge-model", "fake-chat", "--success-threshold", "0.8", "--build", "trajectory")
    assert report["judged"] == 1
    (memory,) = memp.json("list")
    assert memory["outcome"] == "success" and memory["metadata"]["judge_reason"] == "all folded"
    (prompt,) = fake_chat.prompts
    assert "<trajectory>\nTask: fold the laundry" in prompt.prompt and prompt.schema["required"] == ["score", "reason"]


SECRETS = {
    "sk-proj-abcdefghijklmnopqrstuvwx1234": "api-key",
    "AKIAABCDEFGHIJKLMNOP": "aws-access-key",
    "ghp_" + "a" * 36: "github-token",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----": "private-key",
}


def test_secrets_are_masked_before_store_and_prompt(memp, fake_chat, tmp_path: Path) -> None:
    steps = [{"action": f"export TOKEN={s}", "observation": "ok"} for s in SECRETS]
    steps.append({"action": "psql postgres://admin:hunter2pass@db/prod", "observation": "password=Sup3rSecret! ok"})
    steps.append({"action": "curl -H 'Authorization: Bearer abcdefghijklmnop1234'", "observation": "employee 4711"})
    src = write_jsonl(tmp_path / "leaky.jsonl", [{"task": "deploy with key sk-ant-api03-zzzzzzzzzzzzzzzzzzzzzzzz", "steps": steps, "outcome": "success"}])
    fake_chat.queue('{"when_to_use": "w", "parameters": [], "steps": ["s"], "pitfalls": []}')
    result = memp("ingest", str(src), "-m", "fake-chat", "--redact", r"employee \d+", "--json")
    report = json.loads(result.stdout)
    assert report["redacted"] == 9
    assert "masked 9 secrets" in result.stderr
    stored = json.dumps(memp.json("list"))
    prompt = fake_chat.prompts[0].prompt
    for text in (stored, prompt):
        for secret in [*SECRETS, "hunter2pass", "Sup3rSecret", "abcdefghijklmnop1234", "employee 4711", "zzzzzz"]:
            assert secret.split("\n")[0] not in text
    for kind in set(SECRETS.values()) | {"url-credentials", "password", "bearer-token", "custom"}:
        assert f"[REDACTED:{kind}]" in stored
    assert "postgres://admin:[REDACTED:url-credentials]@db/prod" in stored


def test_no_redact_and_bad_pattern(memp, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "r.jsonl", [{"task": "t", "steps": [{"action": "AKIAABCDEFGHIJKLMNOP"}]}])
    bad = memp("ingest", str(src), "--redact", "(unclosed", ok=False)
    assert bad.exit_code == 1 and "--redact pattern 1" in bad.stderr
    memp("ingest", str(src), "--no-redact", "--build", "trajectory")
    assert "AKIAABCDEFGHIJKLMNOP" in memp.json("list")[0]["trajectory"]
