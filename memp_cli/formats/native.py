"""memp's native format: one trajectory per JSONL line (schema: memp_cli/formats/trajectory.schema.json)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import OUTCOMES, Step, Trajectory
from . import Source, json_lines, number

NAME = "native"


def sniff_line(obj: dict[str, Any]) -> bool:
    """Return True when a decoded JSONL line is a native record."""
    return "task" in obj and "steps" in obj


def _text(value: Any, what: str, path: str, line: int, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(path, line, f"{what} must be a non-empty string")
    return value


def parse_line(obj: Any, path: str, line: int) -> Trajectory:
    """Return the trajectory in one decoded JSONL line, or raise InputError saying what is wrong."""
    if not isinstance(obj, dict):
        raise InputError(path, line, "expected a JSON object with task, steps and outcome")
    task = _text(obj.get("task"), "'task'", path, line, required=True)
    steps_raw = obj.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise InputError(path, line, "'steps' must be a non-empty list")
    steps = []
    for i, raw in enumerate(steps_raw):
        if not isinstance(raw, dict):
            raise InputError(path, line, f"steps[{i}] must be an object with an 'action'")
        steps.append(
            Step(
                action=_text(raw.get("action"), f"steps[{i}].action", path, line, required=True) or "",
                thought=_text(raw.get("thought"), f"steps[{i}].thought", path, line),
                observation=_text(raw.get("observation"), f"steps[{i}].observation", path, line),
            )
        )
    outcome = obj.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise InputError(path, line, f"'outcome' must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    score = number(obj.get("score"), "'score'", path, line)
    source_id = obj.get("id")
    if source_id is not None and not isinstance(source_id, (str, int)):
        raise InputError(path, line, "'id' must be a string or integer")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError(path, line, "'metadata' must be an object")
    return Trajectory(
        task=(task or "").strip(),
        steps=steps,
        outcome=outcome,
        score=score,
        source_id=str(source_id) if source_id is not None else None,
        metadata=metadata,
        source_file=path,
        source_line=line,
    )


def read(source: Source) -> Iterator[Trajectory]:
    """Yield the trajectories of a JSONL file, one line at a time."""
    for line, obj in json_lines(source):
        yield parse_line(obj, source.label, line)
