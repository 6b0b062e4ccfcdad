"""The nouns of memp as dataclasses: steps, trajectories, memories and recall matches."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from .choices import BuildPolicy, Outcome, Report, values

BUILD_POLICIES: tuple[str, ...] = values(BuildPolicy)
OUTCOMES: tuple[str, ...] = values(Outcome)
# An outcome report says success or failure; unknown is only ever where a run started.
REPORTS: tuple[str, ...] = values(Report)

# Long tool output says little about how the task was done; keep prompts small.
OBSERVATION_CHARS = 300


@dataclass(frozen=True)
class Step:
    """One agent step: what it thought, what it did, what it saw."""

    action: str
    thought: str | None = None
    observation: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """Return the step a `to_dict` dict describes."""
        return cls(data["action"], data.get("thought"), data.get("observation"))

    def to_dict(self) -> dict[str, str]:
        """Return the step as JSON-ready dict without empty fields."""
        out = {"action": self.action}
        if self.thought is not None:
            out["thought"] = self.thought
        if self.observation is not None:
            out["observation"] = self.observation
        return out


@dataclass
class Trajectory:
    """A task, the steps taken for it and how it ended; `id` is a hash of that content."""

    task: str
    steps: list[Step]
    outcome: str | None  # None until the format, an outcomes file or the defaults settle it
    score: float | None = None
    source_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None
    source_line: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> Trajectory:
        """Return the trajectory in a store row, read by column name (steps as stored, metadata as JSON text)."""
        from .store.runs import decode_steps

        return cls(
            task=row["task"],
            steps=decode_steps(row["steps"]),
            outcome=row["outcome"],
            score=row["score"],
            source_id=row["source_id"],
            metadata=json.loads(row["metadata"] or "{}"),
            source_file=row["source_file"],
            source_line=row["source_line"],
        )

    @cached_property
    def id(self) -> str:
        """Return a hash of the run itself (task and steps): the same run ingested twice, or judged again, is one."""
        canonical = json.dumps(
            {"task": self.task, "steps": [s.to_dict() for s in self.steps]},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        import hashlib  # here, not at the top: loading OpenSSL costs a fresh `memp recall` ~5 ms it never uses

        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """Return the trajectory as a record of memp's native format."""
        return {
            "task": self.task,
            "steps": [s.to_dict() for s in self.steps],
            "outcome": self.outcome,
            "score": self.score,
            "id": self.source_id,
            "metadata": self.metadata,
        }

    def render(self) -> str:
        """Return the trajectory as compact text for a prompt."""
        lines = [f"Task: {self.task}"]
        for step in self.steps:
            if step.thought:
                lines.append(f"Thought: {step.thought}")
            lines.append(f"> {step.action}")
            if step.observation:
                obs = " ".join(step.observation.split())
                if len(obs) > OBSERVATION_CHARS:
                    obs = obs[:OBSERVATION_CHARS] + " ..."
                lines.append(obs)
        lines.append(f"Outcome: {self.outcome}" + (f" (score {self.score:g})" if self.score is not None else ""))
        return "\n".join(lines)


@dataclass
class Script:
    """A procedure distilled from a trajectory, and what it cost to make."""

    text: str
    model: str
    prompt_version: str
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(kw_only=True)
class Memory:
    """A stored unit of procedural knowledge built from one trajectory.

    `trajectory`, the memory's text of its run, is read as `memories.trajectory` holds it (`stored_trajectory`):
    NULL there stands for the render of the stored run (`run_task`, `run_steps`, outcome and score), rendered on
    first access only, so a recall renders none of the memories it does not output (store/runs.py).
    """

    id: int
    trajectory_id: str
    build: str  # the build policy: trajectory, script or proceduralization
    task: str
    outcome: str
    outcome_score: float | None
    script: str | None
    stored_trajectory: str | None  # as stored: None is the render of the run, '' no run (store/runs.py)
    tokens: int
    model: str | None
    prompt_version: str | None
    version: int
    status: str
    recalled: int
    succeeded: int
    failed: int
    created_at: str
    last_recalled_at: str | None
    retired_reason: str | None
    flag: str | None
    scope: str  # the namespace it belongs to (a project, a team): recall searches the scopes asked for
    source_file: str | None
    source_line: int | None
    source_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    run_task: str | None = None  # the stored run's task and steps (as stored), to render `trajectory` from
    run_steps: str | bytes | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: Any) -> Memory:
        """Return the memory in a store row whose columns are named as the fields (metadata as JSON text)."""
        values = {name: row[name] for name in _MEMORY_COLUMNS}
        return cls(**values, metadata=json.loads(row["metadata"]) if row["metadata"] else {})

    @cached_property
    def trajectory(self) -> str | None:
        """Return the memory's text of its run (the example run an agent reads), None when it keeps none."""
        from .store.runs import run_text

        return run_text(self.stored_trajectory, self.run_task or self.task, self.run_steps, self.outcome,
                        self.outcome_score)

    def success_mean(self) -> float:
        """Return the posterior mean success rate: Beta(1, 1), plus the run it was built from, plus each report."""
        # A run of unknown outcome counts for neither side: 0.5 before reports, below a success's 0.67.
        wins = 1 + self.succeeded + (1 if self.outcome == "success" else 0)
        losses = 1 + self.failed + (1 if self.outcome == "failure" else 0)
        return wins / (wins + losses)

    def success_bounds(self, z: float = 1.96) -> tuple[float, float]:
        """Return the Wilson 95% interval of the reported success rate; (0, 1) before any report."""
        n = self.succeeded + self.failed
        if n == 0:
            return 0.0, 1.0
        p = self.succeeded / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def source(self) -> dict[str, Any]:
        """Return where the memory came from."""
        return {"file": self.source_file, "line": self.source_line, "id": self.source_id}

    def to_dict(self) -> dict[str, Any]:
        """Return the memory as a JSON-ready dict, keyed `memory_id` as in every memp output."""
        # A shallow copy of the fields: asdict's deep copy cost batch recall ~1 ms a memory.
        data: dict[str, Any] = {"memory_id": self.id}
        data.update(
            (_SHOWN.get(f.name, f.name), getattr(self, _SHOWN.get(f.name, f.name))) for f in fields(self)
            if f.name not in _HIDDEN and not f.name.startswith("source_")
        )
        data["source"] = self.source()
        low, high = self.success_bounds()
        data["success"] = {"mean": round(self.success_mean(), 4), "lower": round(low, 4), "upper": round(high, 4)}
        return data

    def render(self) -> str:
        """Return the text an agent reads for this memory: script, trajectory, or both."""
        return render_memory(self.script, self.trajectory)


# The fields a store row holds as they are (metadata is JSON text): named once, not on every row.
_MEMORY_COLUMNS = tuple(f.name for f in fields(Memory) if f.name != "metadata")
# to_dict shows the text of the run where its stored form is, and not the run's columns it is rendered from.
_SHOWN = {"stored_trajectory": "trajectory"}
_HIDDEN = frozenset({"id", "run_task", "run_steps"})


def render_memory(script: str | None, trajectory: str | None) -> str:
    """Return a memory's text for an agent: the script, then the example run it came from."""
    parts = []
    if script:
        parts.append(script)
    if trajectory:
        parts.append(("Example run:\n" if script else "") + trajectory)
    return "\n\n".join(parts)


@dataclass
class Match:
    """A recalled memory and how well it matched the task."""

    memory: Memory
    score: float
    rank: int
    similarity: float | None = None
    count: int = 1  # near-copies this match stands for (itself included)

    def to_dict(self) -> dict[str, Any]:
        """Return the match as a JSON-ready dict: `score` ranks, `similarity` is the cosine of the tasks."""
        data = self.memory.to_dict()
        similarity = self.score if self.similarity is None else self.similarity
        return {
            "memory_id": data.pop("memory_id"),
            "rank": self.rank,
            "score": round(self.score, 4),
            "similarity": round(similarity, 4),
            "count": self.count,
            **data,
        }


@dataclass
class Recall:
    """The answer to one recall: its id, for outcome reporting, and the matches."""

    id: str
    task: str
    policy: str
    matches: list[Match]
    # Memories of failed runs that fit the task as well as the matches: what went wrong, to avoid; never a procedure.
    warnings: list[Match] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the recall as a JSON-ready dict."""
        return {
            "recall_id": self.id,
            "task": self.task,
            "policy": self.policy,
            "matches": [m.to_dict() for m in self.matches],
            "warnings": [m.to_dict() for m in self.warnings],
        }
