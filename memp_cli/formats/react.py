"""ReAct trajectories, in the two shapes the ReAct paper's code wrote them.

- ALFWorld prompts: a JSON object of name -> episode text: the room, "Your task is to: ...", then "> action" lines each
  followed by observation lines; "> think: ..." lines are reasoning and become the next step's thought.
- Plain-text logs (WebShop): episodes between dashed lines, "Action: ..." / "Observation: ..." blocks with multi-line
  observations, "think[...]" actions as thoughts, the instruction after "Instruction:", and the reward in
  "Your score (min 0.0, max 1.0): x" (an episode that never bought scores 0).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory
from . import Source, alfworld, load_json, read_text
from .chat import task_from_prompt

NAME = "react"
EPISODE_SPLIT = re.compile(r"^-{5,}\s*$", re.MULTILINE)
BLOCK = re.compile(r"^Action:\s?(.*?)\nObservation:\s?(.*?)(?=^Action:|\Z)", re.DOTALL | re.MULTILINE)
# The number only: a sentence may end right after it ("...: 0.5.").
SCORE = re.compile(r"Your score \(min [\d.]+, max [\d.]+\):\s*(\d+(?:\.\d+)?|\.\d+)")
INSTRUCTION = re.compile(r"Instruction:\s*\n?\s*(.+?)\s*(?:\n\s*\[|\Z)", re.DOTALL)
THINK = re.compile(r"^think\[(.*)\]\s*$", re.DOTALL)


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a mapping of names to ReAct episode texts."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, str) and "\n>" in v for v in data.values())
    )


def sniff_text(text: str) -> bool:
    """Return True when plain text looks like a ReAct log of Action/Observation blocks."""
    return bool(re.search(r"^Action: .*\nObservation:", text, re.MULTILINE))


def parse_episode(text: str) -> tuple[str, list[Step]]:
    """Return the task and steps of one ALFWorld-style episode text."""
    head, sep, body = text.partition("\n>")
    task = task_from_prompt(head)
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


def _read_prompts(source: Source) -> Iterator[Trajectory]:
    data = load_json(source)
    if not sniff(data):
        raise InputError(source.label, 1, "expected a JSON object mapping names to ReAct episode texts")
    for key, episode in data.items():
        task, steps = parse_episode(episode)
        if not task or not steps:
            raise InputError(source.label, None, f"episode {key!r} has no task or no action")
        task_type = alfworld.type_of_prompt_key(key)
        metadata = {"key": key, **({"task_type": task_type} if task_type else {})}
        yield Trajectory(task, steps, None, source_id=key, metadata=metadata, source_file=source.label)


def _read_log(source: Source) -> Iterator[Trajectory]:
    content = read_text(source)
    if not sniff_text(content):
        raise InputError(source.label, 1, "expected a ReAct log of 'Action: ...' / 'Observation: ...' blocks")
    offset_line = 1
    for chunk in EPISODE_SPLIT.split(content):
        start_line = offset_line
        offset_line += chunk.count("\n") + 1
        if "Action:" not in chunk:
            continue
        first = chunk.strip().splitlines()[0].strip()
        episode_id = first if first.isdigit() else None
        steps: list[Step] = []
        task = ""
        thoughts: list[str] = []
        score = 0.0
        for match in BLOCK.finditer(chunk):
            action, observation = match.group(1).strip(), match.group(2).strip()
            if action == "reset":
                instruction = INSTRUCTION.search(observation)
                task = " ".join(instruction.group(1).split()) if instruction else task
                continue
            think = THINK.match(action)
            if think:
                thoughts.append(think.group(1).strip())
                continue
            found = SCORE.search(observation)
            if found:
                score = float(found.group(1))
            # The running tally ("12 0.6 0.4 0.0") trails the last observation; it is the log's, not the agent's.
            observation = re.sub(r"\n\s*\d+ [\d.]+ [\d.]+ [\d.]+\s*$", "", observation).strip()
            steps.append(Step(action, " ".join(thoughts) or None, observation or None))
            thoughts = []
        if not task or not steps:
            raise InputError(source.label, start_line, "episode has no instruction or no action")
        yield Trajectory(
            task, steps, None, score=score, source_id=episode_id, metadata={"episode": episode_id},
            source_file=source.label, source_line=start_line,
        )


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per episode, from JSON prompts or a text log."""
    with source.path.open("rb") as handle:
        head = handle.read(4096).lstrip()[:1]
    yield from _read_prompts(source) if head in (b"{", b"[") else _read_log(source)
