"""Claude Code session JSONL: one record per line ("user", "assistant", "summary", ...), one session per trajectory.

The task is the first user message with text; each assistant `tool_use` is an action (a Bash command as itself,
other tools as name: input), its `tool_result` the observation, and assistant text before it the thought.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import Source, json_lines, text
from .chat import MAX_TASK_CHARS

NAME = "claude-code"
RECORD_TYPES = ("user", "assistant", "summary", "system")


def sniff_line(obj: dict[str, Any]) -> bool:
    """Return True when a decoded JSONL line is a Claude Code session record."""
    return obj.get("type") in RECORD_TYPES and ("sessionId" in obj or "message" in obj or "leafUuid" in obj)


def _tool_action(block: dict[str, Any]) -> str:
    name = str(block.get("name") or "tool")
    args = block.get("input") or {}
    if name == "Bash" and isinstance(args, dict) and isinstance(args.get("command"), str):
        return args["command"]
    if isinstance(args, dict):
        for key in ("file_path", "path", "pattern", "url", "query"):
            if isinstance(args.get(key), str):
                return f"{name}: {args[key]}"
    return f"{name}({json.dumps(args, ensure_ascii=False)[:500]})"


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per session in the file."""
    sessions: dict[str, dict[str, Any]] = {}
    for number, record in json_lines(source):
        if not isinstance(record, dict) or not sniff_line(record):
            raise InputError(source.label, number, "expected a Claude Code record with 'type' and 'message'")
        message = record.get("message")
        if record.get("type") not in ("user", "assistant") or not isinstance(message, dict):
            continue
        session = sessions.setdefault(
            str(record.get("sessionId") or "session"),
            {"task": None, "steps": [], "pending": {}, "thought": [], "line": number},
        )
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": text(content)}]
        for block in blocks:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if record["type"] == "user" and kind == "text" and session["task"] is None and text(block).strip():
                session["task"] = text(block).strip()[:MAX_TASK_CHARS]
            elif record["type"] == "assistant" and kind == "text" and text(block).strip():
                session["thought"].append(text(block).strip())
            elif kind == "tool_use":
                step = {"action": _tool_action(block), "thought": " ".join(session["thought"]) or None}
                session["thought"] = []
                session["steps"].append(step)
                session["pending"][block.get("id")] = step
            elif kind == "tool_result":
                step = session["pending"].pop(block.get("tool_use_id"), None)
                if step is not None:
                    step["observation"] = text(block.get("content")).strip() or None
    for session_id, s in sessions.items():
        if not s["task"] or not s["steps"]:
            raise InputError(source.label, s["line"], f"session {session_id} has no user task or no tool use")
        steps = [Step(st["action"], st["thought"], st.get("observation")) for st in s["steps"]]
        yield Trajectory(
            s["task"], steps, None, source_id=session_id, metadata={"session_id": session_id},
            source_file=source.label, source_line=s["line"],
        )
