"""How well a recalled memory would have guided a run: its steps, fitted to the new task, against the run's own.

`memp eval` reports these per retrieval policy and build policy. Retrieval hit rates say whether a memory of the
right kind came back; fidelity says whether following it would have done what the successful run did.

- The memory's steps are its script's numbered steps, or for a memory that keeps only the run, its `> action` lines.
- They are fitted to the new task by aligning the memory's task with the new one word by word: a word that was
  replaced ("apple" where the new task says "egg") is replaced in every step, and so is a placeholder whose example
  value was that word (`{object}` with example `apple`).
- The reference is what the held-out run needed: its actions less those that failed, repeats that changed nothing,
  and searches that found nothing (`reference_steps`, memp's offline judge, the same for every memory). Both sides
  are compared where they act on the new task's own values (a content word of the task in the step), find steps
  and walks left out alike: where a new room keeps things is nothing a memory could have known.
- Action types: an action's leading verb (`go`, `take`, `heat`), a shell command's program (`pytest`, `sed`), or a
  bracketed action's name (`search`, `click`); a "Find a ..." step counts as `go`, since finding is walking to places.
  Consecutive repeats collapse into one, so a walk through five cabinets and a collapsed "find" step compare equal.

The figures: `type_f1` (overlap of the two multisets of types), `type_edit` (1 - Levenshtein distance between the two
type sequences / the longer length: 1.0 is the same order of the same kinds of steps) and `action_f1` (overlap of the
fitted actions themselves, ALFWorld instance numbers dropped, placeholders left unfilled counting as misses).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .records import Step, Trajectory

_STEP = re.compile(r"^\s*\d+\.\s+(.*\S)\s*$")
_PARAM = re.compile(r"\{([^{}\s]+)\}\s*\(example:\s*([^)]*)\)")
_WORD = re.compile(r"[A-Za-z0-9_./\-]+")
_SHELL_WRAPPERS = frozenset({"sudo", "env", "time", "nohup", "timeout", "xargs", "command"})
# Leading words that do not name the step's kind: politeness and connectives an LLM-written step may start with.
_FILLER = frozenset({"then", "next", "now", "first", "finally", "and", "please"})


@dataclass(frozen=True)
class Fidelity:
    """How closely a memory's fitted steps follow a reference run."""

    type_f1: float
    type_edit: float
    action_f1: float

    def to_dict(self) -> dict[str, float]:
        """Return the figures as a JSON-ready dict."""
        return {"type_f1": round(self.type_f1, 4), "type_edit": round(self.type_edit, 4),
                "action_f1": round(self.action_f1, 4)}


def memory_steps(script: str | None, trajectory: str | None) -> list[str]:
    """Return the steps an agent would follow from a memory: the script's numbered steps, else the run's actions."""
    if script:
        lines = script.splitlines()
        if any(line.strip() == "Steps:" for line in lines):
            start = next(i for i, line in enumerate(lines) if line.strip() == "Steps:") + 1
            steps = []
            for line in lines[start:]:
                match = _STEP.match(line)
                if match is None:
                    break
                steps.append(match.group(1))
            return steps
        # A script with no steps (a failed run written as a warning) guides no action.
        return []
    if trajectory:
        return [line[2:].strip() for line in trajectory.splitlines() if line.startswith("> ")]
    return []


def parameters(script: str | None) -> dict[str, str]:
    """Return the script's placeholders and their example values ("{object} (example: apple)")."""
    return {name: value.strip() for name, value in _PARAM.findall(script or "")}


def alignment(old_task: str, new_task: str) -> dict[str, str]:
    """Return old word -> new word for the words the new task puts where the old task had others."""
    import difflib

    from .keywords import STOPWORDS

    old, new = _WORD.findall(old_task.lower()), _WORD.findall(new_task.lower())
    mapping: dict[str, str] = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "replace" and i2 - i1 == j2 - j1:
            # Function words are the template, not values ("on" for "in" would rewrite every `in/on`).
            mapping.update((a, b) for a, b in zip(old[i1:i2], new[j1:j2])
                           if a not in new and a not in STOPWORDS and b not in STOPWORDS)
    # Tasks of other templates ("clean some soapbar and put it in countertop" / "put a clean plate in countertop")
    # align poorly word by word: pair the content words only the old task has with those only the new one has, in
    # order of appearance.

    only_old = [w for w in dict.fromkeys(old) if w not in new and w not in STOPWORDS and w not in mapping]
    only_new = [w for w in dict.fromkeys(new) if w not in old and w not in STOPWORDS and w not in mapping.values()]
    mapping.update(zip(only_old, only_new))
    return mapping


def fit(steps: Sequence[str], memory_task: str, new_task: str, params: dict[str, str] | None = None) -> list[str]:
    """Return the steps with the memory task's values replaced by the new task's, placeholders filled where known."""
    mapping = alignment(memory_task, new_task)
    fills = {name: mapping.get(value.lower(), value) for name, value in (params or {}).items()}
    out = []
    for step in steps:
        text = step
        for name, value in fills.items():
            text = text.replace("{" + name + "}", value)
        for old, new in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w{{]){re.escape(old)}(?![\w}}])", new, text, flags=re.IGNORECASE)
        out.append(text)
    return out


def action_type(action: str) -> str:
    """Return the kind of an action: its verb, a shell command's program, or a bracketed action's name."""
    text = action.strip().lower()
    bracket = re.match(r"^([a-z_]+)\[", text)
    if bracket:
        return bracket.group(1)
    if text.startswith("find "):
        return "go"
    # A shell line: skip `cd DIR &&` and wrappers such as sudo, then take the program's base name.
    segment = re.split(r"&&|;|\|\|", text)
    for part in segment:
        words = part.split()
        if not words or words[0] == "cd":
            continue
        while words and (words[0] in _SHELL_WRAPPERS or "=" in words[0]):
            words = words[1:]
        if words:
            head = words[0].rsplit("/", 1)[-1]
            if head in ("python", "python3") and len(words) > 2 and words[1] == "-m":
                return words[2]
            return head.strip("`'\":")
    words = [w for w in text.split() if w not in _FILLER]
    return words[0].strip("`'\":") if words else ""


def _collapse(types: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if t and (not out or out[-1] != t):
            out.append(t)
    return out


def _f1(a: Counter[str], b: Counter[str]) -> float:
    if not a or not b:
        return 0.0
    overlap = sum((a & b).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(a.values()), overlap / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def _edit_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return 1.0 - previous[-1] / max(len(a), len(b))


def sequence_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Return 1 - the edit distance between two action-type sequences (repeats collapsed) / the longer length."""
    return _edit_similarity(_collapse(a), _collapse(b))


def _normalise(action: str) -> str:
    text = " ".join(action.lower().split())
    return re.sub(r"\b([a-z]+) \d+\b", r"\1", text)


def reference_steps(run: Trajectory) -> list[str]:
    """Return what a run needed, as memp's offline judge tells it: its procedure's steps, or none for a failure."""
    from .distill import offline_procedure

    script = offline_procedure(run).render()
    # The run's own values back in its placeholders: the reference is what it did, not its generalisation.
    return fit(memory_steps(script, None), run.task, run.task, parameters(script))


def reference_actions(steps: Sequence[Step], failed: Callable[[Step], bool]) -> list[str]:
    """Return a run's actions that did not fail: what a memory should have led the agent to do."""
    return [s.action for s in steps if s.action.strip() and not failed(s)
            and not s.action.strip().lower().startswith("think:")]


def score(fitted: Sequence[str], reference: Sequence[str], task: str = "") -> Fidelity:
    """Return how closely fitted memory steps follow the reference actions.

    With `task`, steps are compared only where they act on the task's own values (a word of the task in the step):
    where a new environment made the run search (walking from place to place), no memory can know the places, and
    matching such walks by chance is no guidance.
    """
    words = _task_words(task)

    def on_task(steps: Sequence[str]) -> list[str]:
        # A script's "Find ..." step stands for the search a run walks, which is left out on both sides alike.
        return [s for s in steps if not words or (words & set(_WORD.findall(_normalise(s)))
                                                   and not s.lower().startswith("find "))]

    def acts(steps: Sequence[str]) -> Counter[str]:
        return Counter(_normalise(s) for s in on_task(steps) if "{" not in s)

    a = _collapse([action_type(s) for s in on_task(fitted)])
    b = _collapse([action_type(s) for s in on_task(reference)])

    return Fidelity(
        _f1(Counter(a), Counter(b)),
        _edit_similarity(a, b) if a else 0.0,
        _f1(acts(fitted), acts(reference)),
    )


def _task_words(task: str) -> set[str]:
    from .keywords import STOPWORDS

    return {w for w in _WORD.findall(task.lower()) if w not in STOPWORDS and not w.isdigit()}
