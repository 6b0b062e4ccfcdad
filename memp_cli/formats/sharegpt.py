"""ShareGPT / ETO conversation lists: [{"from": "human"|"gpt", "value": ...}, ...], one trajectory per file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Trajectory
from . import Source, alfworld, load_json
from .chat import trajectory_from_turns

NAME = "sharegpt"
AGENT_ROLES = ("gpt", "assistant", "model")


def sniff(data: Any) -> bool:
    """Return True when decoded JSON looks like a ShareGPT conversation."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(t, dict) and "from" in t and "value" in t for t in data[:4])
    )


def read(source: Source) -> Iterator[Trajectory]:
    """Yield the one trajectory in a conversation list."""
    data = load_json(source)
    if not sniff(data):
        raise InputError(source.label, 1, 'expected a list of {"from": ..., "value": ...} turns')
    turns = []
    for i, turn in enumerate(data):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise InputError(source.label, None, f"turn {i}: 'value' must be a string")
        turns.append(("agent" if turn.get("from") in AGENT_ROLES else "user", turn["value"]))
    metadata: dict[str, Any] = {}
    # ALFWorld expert files live at <task_dir>/<trial>/gt_traj.json; the folder names the task type.
    task_dir = source.path.parent.parent.name
    task_type = alfworld.type_of_folder(task_dir)
    if task_type:
        metadata = {"task_type": task_type, "task_dir": task_dir, "trial": source.path.parent.name}
    yield trajectory_from_turns(turns, source.label, metadata)
