"""Every choice memp offers, defined once: str-valued enums the CLI turns into checked options (bad ones exit 2).

Domain modules keep plain tuples of the values, derived from these, so they stay free of Typer and of enums.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A choice whose value is its name on the command line; str() gives that value."""

    def __str__(self) -> str:
        return str(self.value)


class BuildPolicy(Choice):
    """What a memory keeps of the run it is built from."""

    TRAJECTORY = "trajectory"
    SCRIPT = "script"
    PROCEDURALIZATION = "proceduralization"


class Outcome(Choice):
    """How a run ended; unknown when nobody recorded it (a Claude Code session), which ranks below success."""

    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


class Report(Choice):
    """What an outcome report says about a run that used memories: it worked or it did not."""

    SUCCESS = "success"
    FAILURE = "failure"


class RecallPolicy(Choice):
    """How recall scores a stored memory against a new task."""

    PROCEDURAL = "procedural"
    QUERY = "query"
    AVEFACT = "avefact"
    HYBRID = "hybrid"
    RANDOM = "random"


class Rank(Choice):
    """What orders the matches: the cosine alone, or the cosine moved by the success estimate."""

    SIMILARITY = "similarity"
    UTILITY = "utility"


class UpdatePolicy(Choice):
    """What an outcome teaches the store."""

    VANILLA = "vanilla"
    VALIDATION = "validation"
    ADJUSTMENT = "adjustment"


class Status(Choice):
    """Where a memory stands: recalled, held for approval, or retired."""

    ACTIVE = "active"
    HELD = "held"
    RETIRED = "retired"


class InputFormat(Choice):
    """Trajectory file formats memp reads; auto detects each file's."""

    AUTO = "auto"
    NATIVE = "native"
    CLAUDE_CODE = "claude-code"
    OPENAI_CHAT = "openai-chat"
    SHAREGPT = "sharegpt"
    MEMP_CHAT = "memp-chat"
    REACT = "react"
    SWE_AGENT = "swe-agent"
    CODEX = "codex"
    TAU_BENCH = "tau-bench"


class OutputFormat(Choice):
    """What a listing or report command prints: a table for people, JSON or JSON Lines for programs."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"


class RecallFormat(Choice):
    """What recall prints: the report formats, or a block to paste into an agent's prompt."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    PROMPT = "prompt"


class Setting(Choice):
    """The store settings `memp config` shows and sets."""

    UPDATE_POLICY = "update_policy"
    UPDATE_EVERY = "update_every"


class HookHost(Choice):
    """Agent hosts whose hooks memp installs."""

    CLAUDE_CODE = "claude-code"


class HookEvent(Choice):
    """The host events memp's hooks answer."""

    USER_PROMPT_SUBMIT = "user-prompt-submit"
    SESSION_END = "session-end"


def values(choice: type[Choice]) -> tuple[str, ...]:
    """Return the values of a choice, in their order."""
    return tuple(member.value for member in choice)
