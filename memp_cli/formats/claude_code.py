"""Claude Code session JSONL: one record per line, one trajectory per session.

Claude Code writes `user` and `assistant` records (the conversation) among housekeeping records (`summary`,
`file-history-snapshot`, `progress`, `last-prompt`, `system`, `queue-operation`, `ai-title`, ...), which are skipped,
as are record types this reader does not know yet. The task is the first thing the user typed; each `tool_use` is an
action (a Bash command as itself, an Edit as its file with the old and new text trimmed, a Write as its file and size,
Read/Grep/Glob briefly), the `tool_result` with its id the observation (a Bash exit status first), and the assistant's
text before it the thought. A subagent's work (records marked `isSidechain`, or the `subagents/agent-<id>.jsonl` file
a Task's result names) comes in as steps after the Task that started it, marked "subagent:".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import Source, call_key, json_lines, text
from .chat import MAX_TASK_CHARS

NAME = "claude-code"
CONVERSATION = ("user", "assistant")
HOUSEKEEPING = (
    "summary", "system", "file-history-snapshot", "progress", "last-prompt", "queue-operation", "ai-title",
    "custom-title", "permission-mode", "mode", "tag", "attachment",
)
# Keys only Claude Code's records carry: they tell its housekeeping lines from any other {"type": ...} line.
MARKS = ("sessionId", "uuid", "parentUuid", "leafUuid", "messageId", "lastPrompt", "aiTitle", "isSidechain", "toolUseID")
# What the user "typed" that Claude Code itself wrote: slash-command echoes, caveats, interruptions.
NOT_TYPED = ("<command-", "<local-command-", "Caveat:", "[Request interrupted", "<system-reminder>", "<bash-")
EDIT_CHARS = 240
EDIT_LINES = 6
# A file's content or a search's hits say little about how a task was done; a command's output says more.
BRIEF_RESULT_CHARS = 300
RESULT_CHARS = 2000
EXIT_CODE = re.compile(r"^\s*(?:Error:\s*)?Exit code (\d+)")
SUBAGENT = "subagent: "


def sniff_line(obj: dict[str, Any]) -> bool:
    """Return True when a decoded JSONL line is a Claude Code record: conversation or housekeeping."""
    kind = obj.get("type")
    if kind in CONVERSATION:
        return isinstance(obj.get("message"), dict) and any(k in obj for k in MARKS)
    return kind in HOUSEKEEPING and (any(k in obj for k in MARKS) or kind == "summary" and "summary" in obj)


def _trim(value: Any, limit: int) -> str:
    body = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    body = body.strip("\n").rstrip()  # an edit's first line keeps its indentation
    return body if len(body) <= limit else body[:limit].rstrip() + " ..."


def _lines(mark: str, value: Any) -> list[str]:
    """Return text as diff-like lines under `mark`, trimmed to a few lines and characters."""
    body = _trim(value if isinstance(value, str) else "", EDIT_CHARS)
    lines = body.splitlines() or [""]
    shown = [f"{mark} {line}".rstrip() for line in lines[:EDIT_LINES]]
    if len(lines) > EDIT_LINES:
        shown.append(f"{mark} ... ({len(lines) - EDIT_LINES} more lines)")
    return shown


def _relative(path: Any, cwd: str | None) -> str:
    """Return a path relative to the session's working directory when it lies inside it."""
    if not isinstance(path, str):
        return "?"
    if cwd and path.rstrip("/") == cwd.rstrip("/"):
        return "."
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1 :]
    return path


def tool_action(name: str, args: Any, cwd: str | None = None) -> str:
    """Return a tool call as an action that keeps what matters for doing it again."""
    if not isinstance(args, dict):
        return f"{name}({_trim(args, 500)})"
    path = _relative(args.get("file_path") or args.get("notebook_path") or args.get("path"), cwd)
    if name == "Bash" and isinstance(args.get("command"), str):
        return args["command"]
    if name == "Edit":
        if "old_string" not in args and "new_string" not in args:
            return f"Edit: {path}"
        return "\n".join([f"Edit: {path}", *_lines("-", args.get("old_string")), *_lines("+", args.get("new_string"))])
    if name == "MultiEdit" and isinstance(args.get("edits"), list):
        out = [f"Edit: {path} ({len(args['edits'])} edits)"]
        for edit in args["edits"][:3]:
            if isinstance(edit, dict):
                out += [*_lines("-", edit.get("old_string")), *_lines("+", edit.get("new_string"))]
        return "\n".join(out)
    if name == "Write":
        content: str = args["content"] if isinstance(args.get("content"), str) else ""
        return f"Write: {path} ({len(content.splitlines())} lines)"
    if name == "Read":
        offset, limit = args.get("offset"), args.get("limit")
        return f"Read: {path}" + (f" (from line {offset}, {limit} lines)" if offset or limit else "")
    if name in ("Grep", "Glob") and isinstance(args.get("pattern"), str):
        where = f" in {path}" if isinstance(args.get("path"), str) else ""
        kind = f" ({args['glob']})" if isinstance(args.get("glob"), str) else ""
        return f"{name}: {args['pattern']}{where}{kind}"
    if name in ("Task", "Agent"):
        agent = args.get("subagent_type") or "agent"
        return f"Task ({agent}): {args.get('description') or ''}\n{_trim(args.get('prompt') or '', EDIT_CHARS)}".strip()
    if name == "TodoWrite" and isinstance(args.get("todos"), list):
        items = [str(t.get("content")) for t in args["todos"] if isinstance(t, dict) and t.get("content")]
        return _trim("TodoWrite: " + "; ".join(items), EDIT_CHARS)
    for key in ("file_path", "notebook_path", "path", "pattern", "url", "query", "command"):
        if isinstance(args.get(key), str):
            return f"{name}: {_relative(args[key], cwd) if key.endswith('path') else args[key]}"
    return f"{name}({_trim(args, 500)})"


def _observation(name: str, block: dict[str, Any]) -> str | None:
    """Return what a tool result showed: a Bash exit status and output, other tools' output trimmed."""
    body = text(block.get("content")).strip()
    limit = BRIEF_RESULT_CHARS if name in ("Read", "Grep", "Glob", "LS", "TodoWrite", "WebFetch") else RESULT_CHARS
    if name == "Bash":
        match = EXIT_CODE.match(body)
        if match:
            body = body[match.end():].strip()
            status = f"exit {match.group(1)}"
        else:
            status = "error" if block.get("is_error") else "exit 0"
        return f"[{status}] {_trim(body, RESULT_CHARS)}".strip()
    if block.get("is_error"):
        return f"[error] {_trim(body, limit)}".strip()
    return _trim(body, limit) or None


@dataclass
class _Session:
    """One session's run as it is read: the task, the steps so far, and tool calls waiting for their result."""

    line: int
    cwd: str | None = None
    branch: str | None = None
    task: str | None = None
    side_task: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[Any, dict[str, Any]] = field(default_factory=dict)
    thoughts: dict[bool, list[str]] = field(default_factory=lambda: {False: [], True: []})
    agents_inline: set[str] = field(default_factory=set)

    def add(self, record: dict[str, Any], source: Source) -> None:
        """Take one user or assistant record into the run."""
        side = bool(record.get("isSidechain"))
        if side and isinstance(record.get("agentId"), str):
            self.agents_inline.add(record["agentId"])
        self.cwd = self.cwd or (record.get("cwd") if isinstance(record.get("cwd"), str) else None)
        self.branch = self.branch or (record.get("gitBranch") or None)
        content = record["message"].get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": text(content)}]
        for block in blocks:
            if isinstance(block, dict):
                self._block(record, block, side, source)

    def _block(self, record: dict[str, Any], block: dict[str, Any], side: bool, source: Source) -> None:
        kind = block.get("type")
        if kind == "text":
            said = text(block).strip()
            if not said:
                return
            if record["type"] == "assistant":
                self.thoughts[side].append(said)
            elif not record.get("isMeta") and not record.get("isCompactSummary") and not said.startswith(NOT_TYPED):
                if side:
                    self.side_task = self.side_task or said[:MAX_TASK_CHARS]
                else:
                    self.task = self.task or said[:MAX_TASK_CHARS]
        elif kind == "tool_use" and record["type"] == "assistant":
            name = str(block.get("name") or "tool")
            step: dict[str, Any] = {"action": tool_action(name, block.get("input"), self.cwd), "name": name, "side": side,
                    "thought": " ".join(self.thoughts[side]) or None, "observation": None}
            self.thoughts[side] = []
            self.steps.append(step)
            self.pending[call_key(block.get("id"))] = step
        elif kind == "tool_result":
            done = self.pending.pop(call_key(block.get("tool_use_id")), None)
            if done is None:
                return
            done["observation"] = _observation(done["name"], block)
            result = record.get("toolUseResult")
            agent = result.get("agentId") if isinstance(result, dict) else None
            if done["name"] in ("Task", "Agent") and isinstance(agent, str) and agent not in self.agents_inline:
                at = next(i for i, s in enumerate(self.steps) if s is done) + 1
                self.steps[at:at] = _subagent_steps(source, record.get("sessionId"), agent)

    def trajectory(self, session_id: str, source: Source) -> Trajectory | None:
        """Return the session's run, or None when it has no task or did nothing."""
        task = self.task or self.side_task
        if not task or not self.steps:
            return None
        nested = self.task is not None  # a file of one subagent's run has no main chain to mark it against
        steps = [
            Step((SUBAGENT if s["side"] and nested else "") + s["action"], s["thought"], s["observation"])
            for s in self.steps
        ]
        metadata: dict[str, Any] = {"session_id": session_id}
        if self.cwd:
            metadata["project"] = Path(self.cwd).name
        if self.branch:
            metadata["git_branch"] = self.branch
        return Trajectory(task, steps, None, source_id=session_id, metadata=metadata, source_file=source.label,
                          source_line=self.line)


def _subagent_steps(source: Source, session_id: Any, agent: str) -> list[dict[str, Any]]:
    """Return the steps of the subagent run a Task started, from its own file beside the transcript, if it is there."""
    folder = source.path.parent
    candidates = [folder / f"agent-{agent}.jsonl"]
    if isinstance(session_id, str):
        candidates.insert(0, folder / session_id / "subagents" / f"agent-{agent}.jsonl")
    candidates.insert(0, folder / source.path.stem / "subagents" / f"agent-{agent}.jsonl")
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return []
    sub = _Session(line=1)
    sub_source = Source(found, str(found))
    for number, record in json_lines(sub_source):
        if isinstance(record, dict) and record.get("type") in CONVERSATION and isinstance(record.get("message"), dict):
            sub.add({**record, "isSidechain": True}, sub_source)
    return sub.steps


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per session in the file that did something; raise InputError when none did."""
    sessions: dict[str, _Session] = {}
    for number, record in json_lines(source):
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            raise InputError(source.label, number, "expected a Claude Code record: a JSON object with a 'type'")
        if record["type"] not in CONVERSATION:
            continue  # housekeeping, and record types newer than this reader
        if not isinstance(record.get("message"), dict):
            raise InputError(source.label, number, f"a {record['type']} record needs a 'message' object")
        session_id = str(record.get("sessionId") or "session")
        sessions.setdefault(session_id, _Session(line=number)).add(record, source)
    runs = [(sid, s, s.trajectory(sid, source)) for sid, s in sessions.items()]
    if not any(run for _, _, run in runs):
        sid, first = next(((sid, s) for sid, s, _ in runs), ("session", _Session(line=1)))
        raise InputError(source.label, first.line, f"session {sid} has no user task or no tool use")
    for _, _, run in runs:
        if run is not None:
            yield run
