"""Secrets out of trajectories before they reach the store or a prompt: API keys, tokens, passwords, private keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .errors import MempError
from .records import Step, Trajectory

# (name, pattern, groups to keep): a match is replaced by its kept groups and a [REDACTED:name] mark.
PATTERNS: list[tuple[str, str, tuple[int, ...]]] = [
    ("private-key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", ()),
    ("api-key", r"\bsk-(?:proj-|ant-(?:api\d+-)?)?[A-Za-z0-9_\-]{20,}", ()),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ()),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", ()),
    ("slack-token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", ()),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b", ()),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", ()),
    ("bearer-token", r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]{16,}", (1,)),
    (
        "password",
        r"(?i)(\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"[\"']?\s*[=:]\s*[\"']?)([^\s\"',;]{6,})",
        (1,),
    ),
    ("url-credentials", r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^/\s@]+(@)", (1, 2)),
]


def _compile(name: str, pattern: str, keep: tuple[int, ...]) -> tuple[str, re.Pattern[str], tuple[int, ...]]:
    return name, re.compile(pattern, re.DOTALL), keep


@dataclass
class Redactor:
    """Masks secrets; counts what it masked."""

    extra: list[str] = field(default_factory=list)
    masked: int = 0

    def __post_init__(self) -> None:
        self._rules = [_compile(*p) for p in PATTERNS]
        for i, pattern in enumerate(self.extra):
            try:
                self._rules.append(("custom", re.compile(pattern), ()))
            except re.error as exc:
                raise MempError(f"--redact pattern {i + 1} ({pattern!r}) is not a valid regex: {exc}") from None

    def text(self, value: str | None) -> str | None:
        """Return `value` with every secret replaced by a [REDACTED:kind] mark."""
        if not value:
            return value
        for name, rule, keep in self._rules:

            def mark(m: re.Match[str], name: str = name, keep: tuple[int, ...] = keep) -> str:
                self.masked += 1
                kept = [m.group(g) or "" for g in keep]
                return (kept[0] if kept else "") + f"[REDACTED:{name}]" + ("".join(kept[1:]))

            value = rule.sub(mark, value)
        return value

    def trajectory(self, traj: Trajectory) -> Trajectory:
        """Return the trajectory with its task and steps redacted."""
        before = self.masked
        steps = [Step(self.text(s.action) or "", self.text(s.thought), self.text(s.observation)) for s in traj.steps]
        task = self.text(traj.task) or ""
        if self.masked == before:
            return traj
        return replace(traj, task=task, steps=steps)
