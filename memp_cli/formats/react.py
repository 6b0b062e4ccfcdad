"""ReAct text trajectories as in the ReAct paper's ALFWorld prompts: a JSON object of name -> episode text.

Each episode: the room, "Your task is to: ...", then "> action" lines, each followed by its observation lines.
"> think: ..." lines are the agent's reasoning and become the next step's thought.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import alfworld
from .sharegpt import split_task

NAME = "react"


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a mapping of names to ReAct episode texts."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, str) and "\n>" in v for v in data.values())
    )


def parse_episode(text: str) -> tuple[str, list[Step]]:
    """Return the task and steps of one ReAct episode text."""
    head, sep, body = text.partition("\n>")
    task = split_task(head)
    steps: list[Step] = []
    thoughts: list[str] = []
    action: str | None = None
    observation: list[str] = []

    def flush() -> None:
        nonlocal action, observation, thoughts
        if action is not None:
            steps.append(Step(action, " ".join(thoughts) or None, "\n".join(observation).strip() or None))
            thoughts = []
        action, observation = None, []

    for line in (">" + body).split("\n") if sep else []:
        if line.startswith(">"):
            content = line[1:].strip()
            flush()
            if content.lower().startswith("think:"):
                thoughts.append(content[len("think:") :].strip())
            else:
                action = content
        elif action is not None:
            observation.append(line)
        # else: the environment's "OK." after a think line says nothing.
    flush()
    return task, steps


def read(data: Any, label: str, path: Path, outcome: str) -> Iterator[Trajectory]:
    """Yield one trajectory per episode."""
    if not sniff(data):
        raise InputError(label, 1, "expected a JSON object mapping names to ReAct episode texts")
    for key, text in data.items():
        task, steps = parse_episode(text)
        if not task or not steps:
            raise InputError(label, None, f"episode {key!r} has no task or no action")
        task_type = alfworld.type_of_prompt_key(key)
        metadata = {"key": key, **({"task_type": task_type} if task_type else {})}
        yield Trajectory(task, steps, outcome, source_id=key, metadata=metadata, source_file=label)
