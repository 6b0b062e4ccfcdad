"""The offline distiller's nouns: which grammar a run follows, the verdict on each action, a procedure's lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Domain(Enum):
    """Which grammar a run's actions follow."""

    HOUSEHOLD = "household"  # ALFWorld-style: go to a place, take, put, clean, heat, cool, open, use
    WEB = "web"  # verb[argument]: search[...], click[...]
    SHELL = "shell"  # commands and tool calls


class Verdict(Enum):
    """What the offline distiller makes of one action."""

    KEPT = "kept"
    THOUGHT = "thought"
    FAILED = "failed"  # the observation says the environment rejected it or it did not run
    REPEATED = "repeated"  # the same action again, and nothing new came of it
    REPRODUCED = "reproduced"  # a check that failed before the run's fix and passed after it
    UNDONE = "undone"  # picked up and put down where the task does not want it: a detour


class Kind(Enum):
    """What one line of a procedure stands for."""

    ACTION = "action"
    FIND = "find"  # a search loop folded into one step
    REPRODUCE = "reproduce"  # run a check that is expected to fail until the fix
    PICK = "pick"  # a choice among the results a page listed
    READ = "read"  # reading commands of a long run, folded into one line


@dataclass
class Judged:
    """One action of a run, the verdict on it, and the line of its observation that tells what happened."""

    index: int
    action: str
    result: str
    verdict: Verdict
    repeats: int = 0


@dataclass
class Entry:
    """One line of a procedure before placeholders are put in."""

    action: str
    kind: Kind = Kind.ACTION
    places: list[str] = field(default_factory=list)  # a find step's places (the last one the find); a read's commands
    opened: bool = False
    result: str = ""


def one_line(text: str, limit: int) -> str:
    """Return text on one line (line breaks shown as ↵), cut to `limit` characters."""
    flat = " ↵ ".join(" ".join(line.split()) for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def brief(action: str, limit: int = 100) -> str:
    """Return an action as a short quote: its first line, with … when it goes on (a heredoc, an edit body)."""
    first, _, rest = action.strip().partition("\n")
    text = one_line(first, limit)
    return text + " …" if rest.strip() and not text.endswith("…") else text
