"""The Mem^p paper's example format: [{"task": type, "example": [{"role": "user"|"assistant", "content": ...}]}].

Assistant turns read "Thought: ... Action: ...", user turns "Observation: ...".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Trajectory
from . import Source, alfworld, load_json
from .chat import trajectory_from_turns

NAME = "memp-chat"


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a list of {"task", "example": [chat turns]} records."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(r, dict) and isinstance(r.get("example"), list) for r in data[:4])
    )


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per example."""
    data = load_json(source)
    if not sniff(data):
        raise InputError(source.label, 1, 'expected a list of {"task": ..., "example": [...]} records')
    for n, record in enumerate(data):
        turns = []
        for turn in record["example"]:
            if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
                raise InputError(source.label, None, f"example {n}: each turn needs a string 'content'")
            turns.append(("agent" if turn.get("role") == "assistant" else "user", turn["content"]))
        kind = str(record.get("task") or "")
        task_type = alfworld.PROMPT_KEYS.get(kind)
        metadata = {"example": kind, **({"task_type": task_type} if task_type else {})}
        yield trajectory_from_turns(turns, source.label, metadata, source_id=kind or str(n))
