"""Codex CLI session rollouts (`~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl`): one session per file.

Each line is `{"timestamp", "type", "payload"}`, type `session_meta`, `response_item`, `event_msg`, `turn_context` or
`compacted`. The task is the user's first message (Codex's own `<environment_context>` and `<user_instructions>`
messages left out); each `function_call`, `custom_tool_call` (apply_patch) or `local_shell_call` is an action, the
output with its `call_id` the observation (exit code first), and the assistant's text and reasoning summary before
it the thought. Rollouts record no outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import Source, call_key, json_lines, text
from .chat import MAX_TASK_CHARS

NAME = "codex"
TYPES = ("session_meta", "response_item", "event_msg", "turn_context", "compacted")
CALLS = ("function_call", "custom_tool_call", "local_shell_call")
OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")
SHELLS = ("shell", "container.exec", "exec_command", "shell_command", "local_shell")
PATCH_FILE = re.compile(r"^\*\*\* (Add|Update|Delete) File: (.+)$", re.MULTILINE)
EXIT_TEXT = re.compile(r"^\s*(?:Process exited with code|Exit code:?)\s*(-?\d+)", re.MULTILINE)
PATCH_CHARS = 600
RESULT_CHARS = 2000


def sniff_line(obj: dict[str, Any]) -> bool:
    """Return True when a decoded JSONL line is a Codex rollout line."""
    return obj.get("type") in TYPES and isinstance(obj.get("payload"), dict) and "timestamp" in obj


def _command(value: Any) -> str | None:
    """Return a shell command as text: ["bash", "-lc", "ls"] as "ls", a string as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        if len(value) == 3 and value[0].endswith(("bash", "sh", "zsh")) and value[1] in ("-lc", "-c"):
            return value[2]
        return " ".join(value)
    return None


def _patch(patch: str) -> str:
    """Return an apply_patch call as its files and the patch trimmed."""
    files = ", ".join(f"{kind} {path.strip()}" for kind, path in PATCH_FILE.findall(patch))
    body = patch if len(patch) <= PATCH_CHARS else patch[:PATCH_CHARS] + " ..."
    return f"apply_patch: {files}\n{body}".strip() if files else f"apply_patch\n{body}"


def call_action(payload: dict[str, Any]) -> str:
    """Return a Codex tool call as an action: the shell command it ran, a patch's files, else name(arguments)."""
    name = str(payload.get("name") or payload.get("type"))
    if payload.get("type") == "local_shell_call":
        action: dict[str, Any] = payload["action"] if isinstance(payload.get("action"), dict) else {}
        return _command(action.get("command")) or f"{name}({json.dumps(action, ensure_ascii=False)[:500]})"
    if payload.get("type") == "custom_tool_call":
        raw = payload.get("input")
        return _patch(raw) if name == "apply_patch" and isinstance(raw, str) else f"{name}({str(raw)[:500]})"
    raw = payload.get("arguments")
    try:
        args: Any = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return f"{name}({str(raw)[:500]})"
    if isinstance(args, dict):
        command = _command(args.get("command") if "command" in args else args.get("cmd"))
        if command is not None and (name in SHELLS or "command" in args or "cmd" in args):
            if command.startswith("apply_patch"):
                return _patch(command.removeprefix("apply_patch").strip())
            return command
        if name == "apply_patch" and isinstance(args.get("input"), str):
            return _patch(args["input"])
    return f"{name}({json.dumps(args, ensure_ascii=False)[:500]})"


def _observation(payload: dict[str, Any]) -> str | None:
    """Return a tool output: its exit code first when it has one, the output trimmed."""
    raw = payload.get("output")
    status = None
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict) and "output" in decoded:
            meta: dict[str, Any] = decoded["metadata"] if isinstance(decoded.get("metadata"), dict) else {}
            status = meta.get("exit_code")
            raw = decoded["output"]
    body = text(raw).strip()
    if status is None:
        match = EXIT_TEXT.search(body)
        status = match.group(1) if match else None
        # exec_command writes a header (exit code, wall time) before "Output:"; the status says what it did
        head, found, rest = body.partition("Output:\n")
        if match and found and match.start() >= 0 and len(head) < 200:
            body = rest.strip()
    if len(body) > RESULT_CHARS:
        body = body[:RESULT_CHARS] + " ..."
    return (f"[exit {status}] " if status is not None else "") + body or None


def _typed(payload: dict[str, Any]) -> str | None:
    """Return what the user typed in a message, or None for the context Codex writes as user messages."""
    said = text(payload.get("content") if "content" in payload else payload.get("message")).strip()
    if not said or said.startswith(("<environment_context", "<user_instructions", "# AGENTS.md", "<turn_aborted")):
        return None
    return said


def read(source: Source) -> Iterator[Trajectory]:
    """Yield the one session in a rollout file."""
    task: str | None = None
    metadata: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    pending: dict[Any, dict[str, Any]] = {}
    thoughts: list[str] = []
    for number, line in json_lines(source):
        if not isinstance(line, dict) or not isinstance(line.get("payload"), dict) or "type" not in line:
            raise InputError(source.label, number, "expected a Codex rollout line: {\"type\", \"payload\": {...}}")
        kind, payload = line["type"], line["payload"]
        item = payload.get("type")
        if kind == "session_meta":
            meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else payload
            for key in ("id", "cwd", "cli_version"):
                if isinstance(meta.get(key), str):
                    metadata["session_id" if key == "id" else key] = meta[key]
        elif kind == "turn_context" and isinstance(payload.get("model"), str):
            metadata.setdefault("model", payload["model"])
        elif kind == "event_msg" and item == "user_message" and task is None:
            task = _typed(payload)
        elif kind != "response_item":
            continue
        elif item == "message" and payload.get("role") == "user" and task is None:
            task = _typed(payload)
        elif item == "message" and payload.get("role") == "assistant":
            said = text(payload.get("content")).strip()
            if said:
                thoughts.append(said)
        elif item == "reasoning" and isinstance(payload.get("summary"), list):
            thoughts.extend(text(part).strip() for part in payload["summary"] if text(part).strip())
        elif item in CALLS:
            step = {"action": call_action(payload), "thought": " ".join(thoughts) or None, "observation": None}
            thoughts = []
            steps.append(step)
            pending[call_key(payload.get("call_id") or payload.get("id"))] = step
        elif item in OUTPUTS and call_key(payload.get("call_id")) in pending:
            pending.pop(call_key(payload["call_id"]))["observation"] = _observation(payload)
    if not task or not steps:
        raise InputError(source.label, None, "Codex session has no user task or no tool call")
    cwd = metadata.pop("cwd", None)
    if cwd:
        metadata["project"] = cwd.rstrip("/").rsplit("/", 1)[-1]
    yield Trajectory(
        task[:MAX_TASK_CHARS], [Step(s["action"], s["thought"], s["observation"]) for s in steps], None,
        source_id=metadata.get("session_id"), metadata=metadata, source_file=source.label,
    )
