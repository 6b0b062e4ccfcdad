"""What chat-shaped formats share: finding the task in an opening message, and turns -> steps."""

from __future__ import annotations

import re
from typing import Any

from ..errors import InputError
from ..records import Step, Trajectory

# Long issue texts make long tasks; the embedding reads the first 256 word pieces anyway.
MAX_TASK_CHARS = 2000

ALFWORLD_TASK = re.compile(r"Your task is to:\s*(.+)", re.IGNORECASE)
PR_DESCRIPTION = re.compile(r"<pr_description>\s*(.*?)\s*</pr_description>", re.DOTALL | re.IGNORECASE)
ISSUE = re.compile(r"ISSUE:\s*\n(.*?)(?:\n\s*INSTRUCTIONS:|\Z)", re.DOTALL)
INSTRUCTIONS = re.compile(r"\n\s*INSTRUCTIONS:.*\Z", re.DOTALL)
# ETO-style agents write "Thought: ... Action: ..." in one turn; mini-swe-agent "THOUGHT: ..." and a bash block.
THOUGHT_ACTION = re.compile(r"^\s*Thought:\s*(.*?)\s*Action:\s*(.*)$", re.DOTALL | re.IGNORECASE)
THOUGHT_ONLY = re.compile(r"^\s*Thought:\s*", re.IGNORECASE)
CODE_BLOCK = re.compile(r"```([a-zA-Z0-9_-]*)\n(.*?)```", re.DOTALL)
SHELL_TAGS = ("bash", "sh", "shell", "console")
OBSERVATION = re.compile(r"^\s*Observation:\s*", re.IGNORECASE)


def task_from_prompt(text: str) -> str:
    """Return the task in an opening message: ALFWorld's sentence, a PR description, an issue, else the message."""
    match = ALFWORLD_TASK.search(text)
    if match:
        return (match.group(1).strip().splitlines() or [""])[0].strip().rstrip(".")
    match = PR_DESCRIPTION.search(text)
    if match:
        body = re.sub(r"^Consider the following PR description:\s*", "", match.group(1), flags=re.IGNORECASE)
        return body.strip()[:MAX_TASK_CHARS]
    match = ISSUE.search(text)
    if match:
        return match.group(1).strip()[:MAX_TASK_CHARS]
    return INSTRUCTIONS.sub("", text).strip()[:MAX_TASK_CHARS]


def split_action(text: str) -> tuple[str | None, str | None]:
    """Return (thought, action) from an agent turn; a turn that only thinks has no action."""
    match = THOUGHT_ACTION.match(text)
    if match:
        return match.group(1) or None, match.group(2).strip()
    blocks = list(CODE_BLOCK.finditer(text))
    if blocks:
        # A turn may quote code in its thought before the command block; the command is the shell block.
        block = next((b for b in blocks if b.group(1).lower() in SHELL_TAGS), blocks[0])
        thought = re.sub(r"^\s*THOUGHT:\s*", "", text[: block.start()], flags=re.IGNORECASE).strip()
        return thought or None, block.group(2).strip()
    if THOUGHT_ONLY.match(text):
        return THOUGHT_ONLY.sub("", text).strip() or None, None
    return None, text.strip()


def trajectory_from_turns(
    turns: list[tuple[str, str]],
    label: str,
    metadata: dict[str, Any],
    outcome: str | None = None,
    source_id: str | None = None,
    score: float | None = None,
) -> Trajectory:
    """Return the trajectory in (role, text) turns, role "user" or "agent": the task, then action/observation pairs.

    The task is the first user turn naming one ("Your task is to:", a PR description, an issue), else the first
    user turn. Turns before it (system prompts, few-shot setup) are not part of the run.
    """
    start = next(
        (i for i, (role, t) in enumerate(turns) if role == "user" and (ALFWORLD_TASK.search(t) or "ISSUE:" in t
         or PR_DESCRIPTION.search(t))),
        None,
    )
    if start is None:
        start = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    if start is None:
        raise InputError(label, None, "no user turn holds the task")
    task = task_from_prompt(turns[start][1])
    steps: list[Step] = []
    pending: list[str] = []  # thoughts from turns that did not act, carried to the next action
    for i in range(start + 1, len(turns)):
        role, body = turns[i]
        if role != "agent":
            continue
        thought, action = split_action(body)
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
    return Trajectory(task, steps, outcome, score=score, source_id=source_id, metadata=metadata, source_file=label)
