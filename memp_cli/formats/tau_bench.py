"""Agent-benchmark result files that list runs with a reward: tau-bench's `[{"task_id", "reward", "info", "traj",
"trial"}]`, each `traj` a list of OpenAI-style messages with tool calls (a `messages` list is read the same way).

The task is the (simulated) user's first message; the reward is the score, and success is a reward from the success
threshold up (tau-bench's 1.0 is success). Each run's id is `<task_id>-<trial>`, for outcome files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InputError
from ..records import Trajectory
from . import Source, load_json, number
from .chat import trajectory_from_turns
from .openai_chat import turns_of

NAME = "tau-bench"


def _messages(run: Any) -> Any:
    return run.get("traj", run.get("messages")) if isinstance(run, dict) else None


def sniff(data: Any) -> bool:
    """Return True when decoded JSON is a list of benchmark runs, each with a reward and its messages."""
    return isinstance(data, list) and bool(data) and all(
        isinstance(run, dict) and "reward" in run and isinstance(_messages(run), list) for run in data[:4]
    )


def _run(run: Any, i: int, label: str) -> Trajectory:
    where = f"runs[{i}]"
    if not isinstance(run, dict):
        raise InputError(label, None, f"{where} must be an object with 'reward' and 'traj'")
    reward = number(run.get("reward"), f"{where}: 'reward'", label, None)
    if reward is None:
        raise InputError(label, None, f"{where}: 'reward' must be a number")
    messages = _messages(run)
    if not isinstance(messages, list):
        raise InputError(label, None, f"{where}: 'traj' must be a list of messages")
    task_id, trial = run.get("task_id"), run.get("trial")
    run_id = None if task_id is None else str(task_id) if trial is None else f"{task_id}-{trial}"
    metadata: dict[str, Any] = {k: v for k, v in (("task_id", task_id), ("trial", trial)) if v is not None}
    info: dict[str, Any] = run["info"] if isinstance(run.get("info"), dict) else {}
    task: dict[str, Any] = info["task"] if isinstance(info.get("task"), dict) else {}
    if isinstance(task.get("user_id"), str):
        metadata["user_id"] = task["user_id"]
    try:
        return trajectory_from_turns(turns_of(messages, label, None), label, metadata, source_id=run_id,
                                     score=reward)
    except InputError as exc:
        raise InputError(label, None, f"{where}: {exc.message}") from None


def read(source: Source) -> Iterator[Trajectory]:
    """Yield one trajectory per run in a results file."""
    data = load_json(source)
    if not sniff(data):
        raise InputError(source.label, 1, 'expected a list of runs: [{"task_id", "reward", "traj": [...]}]')
    for i, run in enumerate(data):
        yield _run(run, i, source.label)
