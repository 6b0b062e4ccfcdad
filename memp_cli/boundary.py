"""What every text passes on its way into the store: secrets masked in every field, then the injection guard.

Trajectories (from files, `memp update --trajectory`, the Python API) go through `prepare`; model answers
(distilled scripts, revisions, keywords) through `check_text`/`check_script`; the store's record for a new memory
is made only by `new_memory`, from a prepared trajectory. A flagged memory is stored but held back from recall
until a person approves it (`memp approve ID`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from .errors import MempError
from .records import Script, Step, Trajectory, render_memory

if TYPE_CHECKING:
    from .store import NewMemory

# (name, pattern, groups to keep, hints): a match is replaced by its kept groups and a [REDACTED:name] mark. A rule
# runs only on text holding one of its hints (lower-case substrings every match contains, see `_hinted`).
# Every rule stays linear in its input: a rule's start is either a literal or cannot begin inside a run of the
# characters it then scans (the lookbehinds), so no run is rescanned from each of its positions. `\b` did not
# ensure that: "+" and "." make word boundaries inside base64-like text, and the old url-credentials rule took 91 s
# on a 160 KB line.
PATTERNS: list[tuple[str, str, tuple[int, ...], tuple[str, ...]]] = [
    (
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        (),
        ("-----begin",),
    ),
    ("api-key", r"\bsk-(?:proj-|ant-(?:api\d+-)?)?[A-Za-z0-9_\-]{20,}", (), ("sk-",)),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", (), ("akia", "asia")),
    (
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        (),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ("slack-token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", (), ("xox",)),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b", (), ("aiza",)),
    (
        "jwt",
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        (),
        ("eyj",),
    ),
    ("bearer-token", r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]{16,}", (1,), ("bearer",)),
    (
        "password",
        (
            r"(?i)(\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
            r"[\"']?\s*[=:]\s*[\"']?)([^\s\"',;]{6,})"
        ),
        (1,),
        ("pass", "pwd", "secret", "apikey", "api_key", "api-key", "token"),
    ),
    (
        "url-credentials",
        # No "[" in the user: "https://[REDACTED:github-token]@host" is a mark already, not "user:password@".
        r"(?i)((?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*://[^/\s:@\[]+:)[^/\s@]+(@)",
        (1, 2),
        ("://",),
    ),
]

# Phrases aimed at a model reading the text, not at the task; each with the hints every match contains.
GUARD_HINTS: dict[str, tuple[str, ...]] = {
    "ignore-instructions": ("ignore", "disregard", "forget", "override"),
    "role-change": ("now", "act"),
    "new-instructions": ("instruction",),
    "chat-markup": ("<|", "[inst]", "[/inst]", "<<sys>>"),
    "hide-from-user": ("user",),
    "exfiltrate": ("exfiltrate", "leak", "send", "upload", "post", "forward"),
    "reader-directive": ("next", "future"),
}
GUARD_PATTERNS: list[tuple[str, str]] = [
    (
        "ignore-instructions",
        (
            r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
            r"(?:previous|prior|above|earlier|preceding|system|original)\s+"
            r"(?:instructions?|prompts?|messages?|rules|guidelines)"
        ),
    ),
    ("role-change", r"\byou\s+are\s+now\s+(?:a|an|in|the)\b|\bact\s+as\s+(?:a|an)\s+(?:unrestricted|jailbroken)\b"),
    ("new-instructions", r"\b(?:new|updated|real)\s+(?:system\s+)?instructions?\s*:"),
    ("chat-markup", r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>"),
    ("hide-from-user", r"\bdo\s+not\s+(?:tell|inform|alert|show)\s+the\s+user\b"),
    (
        "exfiltrate",
        (
            r"\b(?:exfiltrate|leak|send|upload|post|forward)\s+(?:the\s+|all\s+|your\s+|any\s+)*"
            r"(?:secrets?|credentials|api\s+keys?|tokens?|passwords?|env(?:ironment)?\s+variables|ssh\s+keys?)\s+to\b"
        ),
    ),
    ("reader-directive", r"\b(?:the\s+)?(?:next|future)\s+(?:agent|assistant|model|ai)\s+(?:must|should|will)\b"),
]

_GUARD: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = []


def _lowered(text: str) -> str | None:
    """Return `text` lower-cased for hint tests, or None when hints cannot be trusted and every rule must run.

    A substring test is ~50x cheaper than a regex scan, and most text holds no secret and no order. re's
    case-insensitive matching also takes "ı" for "i" and "ſ" for "s", which lower-casing keeps as they are: text
    holding either skips the shortcut.
    """
    lowered = text.lower()
    if text.isascii() or ("ı" not in lowered and "ſ" not in lowered):
        return lowered
    return None


def _hinted(lowered: str | None, hints: tuple[str, ...]) -> bool:
    return lowered is None or not hints or any(h in lowered for h in hints)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # Compiled on first need (~2 ms for all of them): most texts, a recall's task among them, hint at no secret.
    return re.compile(pattern, re.DOTALL)


@dataclass
class Redactor:
    """Masks secrets (the built-in rules and any extra regexes); counts what it masked."""

    extra: list[str] = field(default_factory=list)
    masked: int = 0

    def __post_init__(self) -> None:
        self._rules: list[tuple[str, str | re.Pattern[str], tuple[int, ...], tuple[str, ...]]] = list(PATTERNS)
        for i, pattern in enumerate(self.extra):
            try:
                self._rules.append(("custom", re.compile(pattern), (), ()))
            except re.error as exc:
                raise MempError(f"--redact pattern {i + 1} ({pattern!r}) is not a valid regex: {exc}") from None

    def text(self, value: str | None) -> str | None:
        """Return `value` with every secret replaced by a [REDACTED:kind] mark."""
        if not value:
            return value
        lowered = _lowered(value)
        for name, rule, keep, hints in self._rules:
            if not _hinted(lowered, hints):
                continue
            if isinstance(rule, str):
                rule = _compiled(rule)

            def mark(m: re.Match[str], name: str = name, keep: tuple[int, ...] = keep) -> str:
                kept = [m.group(g) or "" for g in keep]
                out = (kept[0] if kept else "") + f"[REDACTED:{name}]" + "".join(kept[1:])
                # A mark already in place matches again ("password=[REDACTED:password]"): not a new secret.
                self.masked += out != m.group(0)
                return out

            value = rule.sub(mark, value)
        return value

    def value(self, data: Any) -> Any:
        """Return `data` (JSON-like: dicts, lists, strings) with every string in it redacted."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {k: self.value(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.value(v) for v in data]
        return data

    def trajectory(self, traj: Trajectory) -> Trajectory:
        """Return the trajectory with its task, every step's fields and every string in its metadata redacted."""
        # One look over the whole run first: most runs hold nothing any rule looks for.
        lowered = _lowered(_stored_text(traj))
        if not any(_hinted(lowered, hints) for _, _, _, hints in self._rules):
            return traj
        before = self.masked
        steps = [Step(self.text(s.action) or "", self.text(s.thought), self.text(s.observation)) for s in traj.steps]
        task = self.text(traj.task) or ""
        metadata = self.value(traj.metadata)
        if self.masked == before:
            return traj
        return replace(traj, task=task, steps=steps, metadata=metadata)


def flag(text: str | None) -> str | None:
    """Return why `text` looks like an instruction to its reader (the pattern and the words), else None."""
    if not text:
        return None
    if not _GUARD:
        _GUARD.extend((name, re.compile(p, re.IGNORECASE), GUARD_HINTS[name]) for name, p in GUARD_PATTERNS)
    lowered = _lowered(text)
    for name, rule, hints in _GUARD:
        match = rule.search(text) if _hinted(lowered, hints) else None
        if match:
            return f"{name}: {' '.join(match.group(0).split())[:80]!r}"
    return None


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
    clean = redactor.trajectory(traj) if redactor is not None else traj
    return Prepared(clean, flag(_stored_text(clean)))


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
