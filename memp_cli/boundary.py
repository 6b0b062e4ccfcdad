"""What every text passes on its way into the store: secrets masked in every field, then the injection guard.

Trajectories (from files, `memp update --trajectory`, the Python API) go through `prepare`; model answers
(distilled scripts, revisions, keywords) through `check_text`/`check_script`; the store's record for a new memory
is made only by `new_memory`, from a prepared trajectory. A flagged memory is stored but held back from recall
until a person approves it (`memp approve ID`). What is masked is memp_cli/secrets.py's; what is flagged,
memp_cli/guard.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import secrets
from .errors import MempError
from .guard import flag
from .records import Script, Step, Trajectory, render_memory

if TYPE_CHECKING:
    from .store import NewMemory

__all__ = ["Checked", "Prepared", "Redactor", "check_script", "check_text", "flag", "new_memory", "prepare"]



@dataclass
class Redactor:
    """Masks secrets (memp_cli/secrets.py's rules and any extra regexes); counts what it masked."""

    extra: list[str] = field(default_factory=list)
    masked: int = 0

    def __post_init__(self) -> None:
        rules = []
        for i, pattern in enumerate(self.extra):
            try:
                rules.append(secrets.custom_rule(pattern))
            except re.error as exc:
                raise MempError(f"--redact pattern {i + 1} ({pattern!r}) is not a valid regex: {exc}") from None
        self._extra = tuple(rules)

    def text(self, value: str | None) -> str | None:
        """Return `value` with every secret replaced by a [REDACTED:kind] mark."""
        if not value:
            return value
        clean, count = secrets.mask(value, self._extra)
        self.masked += count
        return clean

    def value(self, data: Any) -> Any:
        """Return `data` (JSON-like: dicts, lists, strings) with every string in it redacted."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {k: self.value(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.value(v) for v in data]
        return data

    def trajectory(self, traj: Trajectory, stored: str | None = None) -> Trajectory:
        """Return the trajectory with its task, every step's fields and every string in its metadata redacted
        (`stored`: its `_stored_text`, when the caller has it already)."""
        # One look over the whole run first: most runs hold nothing any rule looks for.
        if not secrets.spans(_stored_text(traj) if stored is None else stored, self._extra):
            return traj
        before = self.masked
        steps = [Step(self.text(s.action) or "", self.text(s.thought), self.text(s.observation)) for s in traj.steps]
        task = self.text(traj.task) or ""
        metadata = self.value(traj.metadata)
        if self.masked == before:
            return traj
        return replace(traj, task=task, steps=steps, metadata=metadata)


def _strings(data: Any) -> Iterable[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, (list, tuple)):
        for v in data:
            yield from _strings(v)


def _stored_text(traj: Trajectory) -> str:
    """Return every text a trajectory stores, in full, joined: what the guard reads."""
    parts = [traj.task]
    for s in traj.steps:
        parts.extend(t for t in (s.thought, s.action, s.observation) if t)
    parts.extend(_strings(traj.metadata))
    return "\n".join(parts)


@dataclass(frozen=True)
class Prepared:
    """A trajectory past the boundary: redacted in every field (unless redaction was turned off), and its verdict."""

    trajectory: Trajectory
    flag: str | None


@dataclass(frozen=True)
class Checked:
    """A model's answer past the boundary: redacted, and the guard's verdict on it."""

    text: str
    flag: str | None


def prepare(traj: Trajectory, redactor: Redactor | None) -> Prepared:
    """Return the trajectory redacted by `redactor` (None: as it is, for --no-redact) and the guard's verdict."""
    text = _stored_text(traj)
    clean = redactor.trajectory(traj, text) if redactor is not None else traj
    # The guard reads what is stored: the redacted texts, the same as read when nothing was masked.
    return Prepared(clean, flag(text if clean is traj else _stored_text(clean)))


def check_text(text: str, redactor: Redactor | None) -> Checked:
    """Return a model's answer (a script, a revision, keywords) redacted by `redactor` (None: as it is), and flagged."""
    clean = (redactor.text(text) if redactor is not None else text) or ""
    return Checked(clean, flag(clean))


def check_script(script: Script, redactor: Redactor | None) -> tuple[Script, str | None]:
    """Return the script with its text redacted, and the guard's verdict on it."""
    checked = check_text(script.text, redactor)
    return (script if checked.text == script.text else replace(script, text=checked.text)), checked.flag


def redact_text(text: str) -> str:
    """Return `text` with the built-in rules applied (for text logged rather than stored as memory: recall tasks)."""
    return Redactor().text(text) or ""


def build_memory(traj: Trajectory, policy: str, script: Script | None) -> tuple[str | None, int]:
    """Return the trajectory text the memory keeps under `policy`, and the memory's token count."""
    from .tokens import count_tokens

    text = traj.render() if policy in ("trajectory", "proceduralization") else None
    return text, count_tokens(render_memory(script.text if script else None, text))


def new_memory(
    prepared: Prepared, build: str, script: Script | None, vector: list[float], redactor: Redactor | None
) -> NewMemory:
    """Return the store's record for a new memory: its script checked, held when the run or the script is flagged."""
    from .store import NewMemory

    held = prepared.flag
    if script is not None:
        script, script_flag = check_script(script, redactor)
        held = held or script_flag
    text, tokens = build_memory(prepared.trajectory, build, script)
    return NewMemory(prepared.trajectory, build, script, text, tokens, vector, held)
