"""OpenAI-style chat `messages`: {"messages": [...]} documents, JSONL of them, or a bare message list.

Actions come from assistant tool calls (their command or arguments) or from a fenced command block
(mini-swe-agent's "THOUGHT: ..." plus one bash block); observations from the tool or user message that follows.
mini-swe-agent runs carry `instance_id`; their outcomes come from an outcomes file (resolved true/false).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Trajectory
from . import Source, _first_line, json_lines, load_json, text
from .chat import trajectory_from_turns

NAME = "openai-chat"


def sniff_line(obj: dict[str, Any]) -> bool:
    """Return True when a decoded JSONL line is a chat record."""
    return isinstance(obj.get("messages"), list)


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a chat document or a list of role/content messages."""
    if isinstance(data, dict):
        return sniff_line(data)
    return isinstance(data, list) and bool(data) and all(isinstance(m, dict) and "role" in m for m in data[:4])


def tool_call_action(call: dict[str, Any]) -> str:
    """Return a tool call as an action: the command it runs, else name(arguments)."""
    fn = call.get("function") or call
    name = str(fn.get("name") or "tool")
    args: Any = fn.get("arguments") or fn.get("input") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return f"{name}({args})"
    if isinstance(args, dict) and len(args) == 1 and isinstance(next(iter(args.values())), str):
        value = next(iter(args.values()))
        return value if name.lower() in ("bash", "shell", "execute_bash", "run", "terminal") else f"{name}: {value}"
    return f"{name}({json.dumps(args, ensure_ascii=False)})"


def turns_of(messages: list[Any], label: str, line: int | None) -> list[tuple[str, str]]:
    """Return (role, text) turns: "agent" for assistant messages and tool calls, "user" for the rest but system."""
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise InputError(label, line, f"messages[{i}] must be an object with a 'role'")
        role, content = msg["role"], text(msg.get("content"))
        if role == "system":
            continue
        if role == "assistant":
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise InputError(label, line, f"messages[{i}].tool_calls must be a list")
            if calls:
                for call in calls:
                    action = tool_call_action(call if isinstance(call, dict) else {})
                    turns.append(("agent", f"Thought: {content}\nAction: {action}" if content else action))
            elif content:
                turns.append(("agent", content))
        else:
            turns.append(("user", content))
    return turns


def _repo(instance_id: str) -> str | None:
    owner, sep, rest = instance_id.partition("__")
    return f"{owner}/{rest.rsplit('-', 1)[0]}" if sep else None


def from_record(record: dict[str, Any], label: str, line: int | None) -> Trajectory:
    """Return the trajectory in one chat record."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise InputError(label, line, "'messages' must be a list")
    instance = record.get("instance_id") or record.get("id")
    metadata: dict[str, Any] = {}
    if instance:
        metadata["instance_id"] = str(instance)
        repo = _repo(str(instance))
        if repo:
            metadata["repo"] = repo
            metadata["task_type"] = repo
    info = record.get("info")
    if isinstance(info, dict) and info.get("exit_status"):
        metadata["exit_status"] = info["exit_status"]
    try:
        return trajectory_from_turns(
            turns_of(messages, label, line), label, metadata, source_id=str(instance) if instance else None
        )
    except InputError as exc:
        raise InputError(label, line, exc.message) from None


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per chat record."""
    first = _first_line(source)
    if isinstance(first, dict) and sniff_line(first):
        for number, record in json_lines(source):
            if not isinstance(record, dict):
                raise InputError(source.label, number, "expected a JSON object with 'messages'")
            yield from_record(record, source.label, number)
        return
    data = load_json(source)
    if isinstance(data, list):
        data = {"messages": data}
    if not sniff(data):
        raise InputError(source.label, 1, "expected {\"messages\": [...]} or a list of messages")
    yield from_record(data, source.label, None)
