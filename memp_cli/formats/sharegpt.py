"""ShareGPT / ETO conversation lists: [{"from": "human"|"gpt", "value": ...}, ...], one trajectory per file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import alfworld

NAME = "sharegpt"
TASK = re.compile(r"Your task is to:\s*(.+)", re.IGNORECASE)
# ETO-style agents write "Thought: ... Action: ..." in one turn.
THOUGHT_ACTION = re.compile(r"^\s*Thought:\s*(.*?)\s*Action:\s*(.*)$", re.DOTALL | re.IGNORECASE)
THOUGHT_ONLY = re.compile(r"^\s*Thought:\s*", re.IGNORECASE)
OBSERVATION = re.compile(r"^\s*Observation:\s*", re.IGNORECASE)


def sniff(data: Any) -> bool:
    """Return True when decoded JSON looks like a ShareGPT conversation."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(t, dict) and "from" in t and "value" in t for t in data[:4])
    )


def split_task(text: str) -> str:
    """Return the task in an opening message: the 'Your task is to:' sentence, else its last line."""
    match = TASK.search(text)
    if match:
        return match.group(1).strip().splitlines()[0].strip().rstrip(".")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def split_action(text: str) -> tuple[str | None, str | None]:
    """Return (thought, action) from an agent turn; a turn that only thinks has no action."""
    match = THOUGHT_ACTION.match(text)
    if match:
        return match.group(1) or None, match.group(2).strip()
    if THOUGHT_ONLY.match(text):
        return THOUGHT_ONLY.sub("", text).strip() or None, None
    return None, text.strip()


def trajectory_from_turns(
    turns: list[tuple[str, str]], label: str, outcome: str, metadata: dict[str, Any], source_id: str | None = None
) -> Trajectory:
    """Return the trajectory in (role, text) turns, role "user" or "agent": the task, then action/observation pairs."""
    start = next((i for i, (role, text) in enumerate(turns) if role == "user" and TASK.search(text)), None)
    if start is None:
        start = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    if start is None:
        raise InputError(label, None, "no user turn holds the task")
    task = split_task(turns[start][1])
    steps: list[Step] = []
    pending: list[str] = []  # thoughts from turns that did not act, carried to the next action
    for i in range(start + 1, len(turns)):
        role, text = turns[i]
        if role != "agent":
            continue
        thought, action = split_action(text)
        if thought:
            pending.append(thought)
        if not action:
            continue
        nxt = turns[i + 1] if i + 1 < len(turns) else None
        observation = OBSERVATION.sub("", nxt[1]).strip() if nxt and nxt[0] == "user" else None
        steps.append(Step(action=action, thought=" ".join(pending) or None, observation=observation or None))
        pending = []
    if not task or not steps:
        raise InputError(label, None, "conversation has no task or no agent action")
    return Trajectory(task, steps, outcome, source_id=source_id, metadata=metadata, source_file=label)


def read(data: Any, label: str, path: Path, outcome: str) -> Iterator[Trajectory]:
    """Yield the one trajectory in a conversation list."""
    if not sniff(data):
        raise InputError(label, 1, 'expected a list of {"from": ..., "value": ...} turns')
    turns = []
    for i, turn in enumerate(data):
        if not isinstance(turn.get("value"), str):
            raise InputError(label, None, f"turn {i}: 'value' must be a string")
        turns.append(("agent" if turn["from"] in ("gpt", "assistant") else "user", turn["value"]))
    metadata: dict[str, Any] = {}
    # ALFWorld expert files live at <task_dir>/<trial>/gt_traj.json; the folder names the task type.
    task_dir = path.parent.parent.name
    task_type = alfworld.type_of_folder(task_dir)
    if task_type:
        metadata = {"task_type": task_type, "task_dir": task_dir, "trial": path.parent.name}
    yield trajectory_from_turns(turns, label, outcome, metadata)
