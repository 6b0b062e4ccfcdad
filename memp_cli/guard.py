"""Untrusted trajectory text: spotting memories that read like instructions to the next agent (prompt injection).

A memory whose text matches one of PATTERNS is stored but held back from recall until a person approves it
(`memp approve ID`). The list errs towards phrases aimed at a model reading the text, not at the task.
"""

from __future__ import annotations

import re

PATTERNS: list[tuple[str, str]] = [
    ("ignore-instructions", r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
     r"(?:previous|prior|above|earlier|preceding|system|original)\s+(?:instructions?|prompts?|messages?|rules|guidelines)"),
    ("role-change", r"\byou\s+are\s+now\s+(?:a|an|in|the)\b|\bact\s+as\s+(?:a|an)\s+(?:unrestricted|jailbroken)\b"),
    ("new-instructions", r"\b(?:new|updated|real)\s+(?:system\s+)?instructions?\s*:"),
    ("chat-markup", r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>"),
    ("hide-from-user", r"\bdo\s+not\s+(?:tell|inform|alert|show)\s+the\s+user\b"),
    ("exfiltrate", r"\b(?:exfiltrate|leak|send|upload|post|forward)\s+(?:the\s+|all\s+|your\s+|any\s+)*"
     r"(?:secrets?|credentials|api\s+keys?|tokens?|passwords?|env(?:ironment)?\s+variables|ssh\s+keys?)\s+to\b"),
    ("reader-directive", r"\b(?:the\s+)?(?:next|future)\s+(?:agent|assistant|model|ai)\s+(?:must|should|will)\b"),
]
_RULES = [(name, re.compile(p, re.IGNORECASE)) for name, p in PATTERNS]


def flag(text: str | None) -> str | None:
    """Return why `text` looks like an instruction to its reader (the pattern and the words), else None."""
    if not text:
        return None
    for name, rule in _RULES:
        match = rule.search(text)
        if match:
            return f"{name}: {' '.join(match.group(0).split())[:80]!r}"
    return None
