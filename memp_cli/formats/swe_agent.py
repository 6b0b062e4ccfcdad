"""SWE-agent `.traj` files: {"trajectory": [{"thought", "action", "observation", ...}], "history": [...], "info"}.

The task is the issue (or challenge) text in the first user message of the history. Files with only a history
(function-calling demonstrations) are read as chat messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import Source, load_json, text
from .chat import task_from_prompt, trajectory_from_turns
from .openai_chat import turns_of

NAME = "swe-agent"


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a SWE-agent trajectory."""
    return isinstance(data, dict) and "messages" not in data and (
        isinstance(data.get("trajectory"), list) or isinstance(data.get("history"), list)
    )


def _label(source: Source) -> dict[str, Any]:
    """Return a task type from where demonstrations are kept: ctf/<category>, or the repository of a replay."""
    parts = source.path.parts
    if "ctf" in parts and parts.index("ctf") + 1 < len(parts) - 1:
        return {"task_type": "ctf/" + parts[parts.index("ctf") + 1]}
    name = source.path.stem
    owner, sep, rest = name.partition("__")
    return {"task_type": f"{owner}/{rest.rsplit('-', 1)[0]}"} if sep else {}


def read(source: Source) -> Iterator[Trajectory]:
    """Yield the one trajectory in a .traj file."""
    data = load_json(source)
    if not sniff(data):
        raise InputError(source.label, 1, 'expected a SWE-agent trajectory with "trajectory" or "history"')
    history = data.get("history") or []
    if not isinstance(history, list):
        raise InputError(source.label, None, "'history' must be a list of messages")
    metadata = _label(source)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    if info.get("exit_status"):
        metadata["exit_status"] = info["exit_status"]
    if not isinstance(data.get("trajectory"), list):
        yield trajectory_from_turns(turns_of(history, source.label, None), source.label, metadata)
        return
    user = next((m for m in history if isinstance(m, dict) and m.get("role") == "user"), None)
    if user is None:
        raise InputError(source.label, None, "no user message in the history holds the task")
    steps = []
    for i, entry in enumerate(data["trajectory"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("action"), str):
            raise InputError(source.label, None, f"trajectory[{i}] needs a string 'action'")
        if entry["action"].strip():
            thought = text(entry.get("thought")).strip() or None
            steps.append(Step(entry["action"].strip(), thought, text(entry.get("observation")).strip() or None))
    if not steps:
        raise InputError(source.label, None, "trajectory has no action")
    task = task_from_prompt(text(user.get("content")))
    yield Trajectory(task, steps, None, metadata=metadata, source_file=source.label)
