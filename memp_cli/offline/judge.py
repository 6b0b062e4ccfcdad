"""Judging each action of a run from its own observation: kept, a thought, failed, or a repeat that changed nothing."""

from __future__ import annotations

import re
from functools import lru_cache

from ..records import Trajectory
from .household import GO, HOUSEHOLD
from .steps import Domain, Judged, Verdict, one_line

RESULT_CHARS = 120

# The first line of an observation like these says the action itself did not work. Output that merely reports a
# problem ("nginx -t" showing a bad config, a failing assertion) is what the run learned from, and is kept.
REJECTED = re.compile(
    r"^\s*(?:nothing happens|invalid (?:action|command|input|syntax)|unknown (?:action|command)|usage:|"
    r"(?:error|fatal|wrong|incorrect)\b|traceback \(most recent call last\))"
    r"|command not found|no such file or directory|permission denied|syntax error|\btimed out\b"
    r"|\boutput (?:\w+ ){0,4}(?:was|is) too long",
    re.IGNORECASE,
)
RETURN_CODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>|\bexit (?:code|status):? (-?\d+)", re.IGNORECASE)
TAG_LINE = re.compile(r"^\s*</?(?:returncode|output|warning)[^>]*>.*?(?:</\w+>)?\s*$", re.IGNORECASE)
BUTTON = re.compile(r"^\s*\[[^\[\]]*\]\s*$")
ERROR_LINE = re.compile(r"^\s*(?:-\s*)?(?:E\d+\s+)?[A-Za-z_.]*(?:Error|Exception)\b")
READING = frozenset({
    "cat", "nl", "sed", "grep", "rg", "ls", "find", "head", "tail", "wc", "pwd", "which", "open", "goto", "scroll_up",
    "scroll_down", "find_file", "search_file", "search_dir", "file", "tree",
})
READERS = frozenset({
    "cat", "head", "tail", "less", "more", "grep", "logs", "log", "journalctl", "dmesg",
})
UNRUN = re.compile(r"command not found|no such file or directory|permission denied|^\s*usage:", re.IGNORECASE)
# The line a test runner ends with ("2 failed, 10 passed in 3.1s", "FAILED (failures=1)", "Ran 5 tests").
SUMMARY = re.compile(r"\b\d+ (?:passed|failed|errors?)\b|^\s*(?:FAILED|OK)\b(?: \(|$)|^Ran \d+ tests?\b")
THINK = re.compile(r"^\s*think\s*[:\[]", re.IGNORECASE)
BRACKET = re.compile(r"^(?P<verb>[a-z_]+)\[(?P<arg>.*)\]$", re.IGNORECASE | re.DOTALL)
# Shell commands: what runs a check without being the check ("sudo pytest" is pytest).
WRAPPERS = frozenset({
    "sudo", "env", "time", "timeout", "nice", "nohup", "stdbuf",
})
# Commands that change existing code, as opposed to writing a new script to reproduce a problem with.
EDITS = re.compile(r"\bsed\s+(?:-\w+\s+)*-i|^edit\b|\bstr_replace|\bpatch\b|\bgit apply\b|\bapply_patch\b")
SEGMENTS = re.compile(r"&&|\|\||;|\|")
# A repeat whose output differs from last time only by a few names the run itself wrote learned nothing new.
MAX_OWN_NEW_WORDS = 3
WORDS = re.compile(r"[\w.\-/]+")
# Observations repeat across runs of one world ("Nothing happens.", what a place holds): the pure functions of one
# observation below keep their last answers. Only speed depends on this, never a result.
SEEN = 16384


def domain_of(traj: Trajectory) -> Domain:
    """Return the grammar most of the run's actions follow."""
    actions = [s.action.strip() for s in traj.steps if s.action.strip() and not THINK.match(s.action)]
    if sum(bool(HOUSEHOLD.match(a)) for a in actions) * 2 > len(actions) and any(GO.match(a) for a in actions):
        return Domain.HOUSEHOLD
    if actions and sum(bool(BRACKET.match(a)) for a in actions) * 2 > len(actions):
        return Domain.WEB
    return Domain.SHELL


@lru_cache(maxsize=SEEN)
def _content(observation: str | None) -> tuple[str, ...]:
    # Tool tags (<returncode>) and lone page buttons ("[Back to Search]") say nothing about what happened.
    return tuple(ln for ln in (observation or "").splitlines()
                 if ln.strip() and not TAG_LINE.match(ln) and not BUTTON.match(ln))


@lru_cache(maxsize=SEEN)
def telling_line(observation: str | None) -> str:
    """Return the observation's line that says what happened: a test run's summary, else its first line."""
    lines = _content(observation)
    summary = [ln for ln in lines if SUMMARY.search(ln)]
    return one_line((summary or lines or [""])[-1 if summary else 0].strip(" =-"), RESULT_CHARS)


@lru_cache(maxsize=SEEN)
def failure_line(observation: str | None) -> str:
    """Return why an action failed: a traceback's last error, a test summary, else the first line and its error."""
    lines = _content(observation)
    if not lines:
        return "(no output)"
    errors = [ln for ln in lines if ERROR_LINE.match(ln)]
    if lines[0].lower().startswith("traceback") and errors:
        return one_line(errors[-1], RESULT_CHARS)
    summary = [ln for ln in lines if SUMMARY.search(ln)]
    if summary:
        said = one_line(summary[-1].strip(" =-"), 80)
        return one_line(lines[0], 80) + " — " + said if REJECTED.search(lines[0]) and summary[-1] != lines[0] else said
    if errors and errors[0] is not lines[0]:
        return one_line(lines[0], 80) + " — " + one_line(errors[0].lstrip(" -"), 80)
    return one_line(lines[0], RESULT_CHARS)


@lru_cache(maxsize=SEEN)
def failure_of(action: str, observation: str | None, expects_code: bool = False) -> bool:
    """Return True when the observation says its action failed: a rejection, a non-zero return code, or no run."""
    obs = observation or ""
    code = RETURN_CODE.search(obs[:200])
    if code:
        if int(code.group(1) or code.group(2)) != 0:
            return True
    elif expects_code:
        return True  # every other command in this run reports a return code: this one never ran
    lines = _content(obs)
    line = lines[0] if lines else ""
    # What a reader prints (`docker logs`, `cat`) is content: an "Error: ..." in it is what the run learned.
    if READERS.intersection(action.split()[:3]) and not UNRUN.search(line):
        return False
    return bool(REJECTED.search(line))


TOGGLE = re.compile(r"^(?P<verb>open|close) (?P<place>.+)$", re.IGNORECASE)
TOGGLES = {"open": "close", "close": "open"}


def judge(traj: Trajectory, domain: Domain) -> list[Judged]:
    """Return each action of the run with its verdict, in order (empty actions left out)."""
    observed = [s.observation for s in traj.steps if s.observation]
    expects_code = sum(bool(RETURN_CODE.search(o[:200])) for o in observed) * 2 > len(observed) > 0
    last_step = max((i for i, s in enumerate(traj.steps) if s.action.strip()), default=-1)
    out: list[Judged] = []
    last: dict[str, tuple[str, Judged]] = {}
    written: set[str] = set()  # words of the run's own actions
    here: str | None = None
    undone: set[str] = set()  # household toggles whose opposite the run did since ("open fridge 1" after a close)
    for i, step in enumerate(traj.steps):
        action = step.action.strip()
        if not action:
            continue
        obs = " ".join((step.observation or "").split())
        item = Judged(i, action, telling_line(step.observation), Verdict.KEPT)
        go = GO.match(action) if domain is Domain.HOUSEHOLD else None
        # The last action is what ended the run (a submission answered with the patch, not with a return code).
        ended = i == last_step
        if THINK.match(action):
            item.verdict = Verdict.THOUGHT
        elif failure_of(action, step.observation, expects_code and not ended):
            item.verdict = Verdict.FAILED
            item.result = failure_line(step.observation)
        elif (action in last and _nothing_new(last[action][0], obs, written, domain)
              and (go is None or go["place"] == here) and action.lower() not in undone):
            # The same action saw what it saw last time: nothing changed. A walk back to a place is not that, and
            # neither is opening again what the run closed meanwhile.
            item.verdict = Verdict.REPEATED
            last[action][1].repeats += 1
        if item.verdict is Verdict.KEPT:
            last[action] = (obs, item)
            here = go["place"] if go else here
            toggle = TOGGLE.match(action) if domain is Domain.HOUSEHOLD else None
            if toggle:
                undone.discard(action.lower())
                undone.add(f"{TOGGLES[toggle['verb'].lower()]} {toggle['place']}".lower())
        if domain is Domain.SHELL:  # only a shell run's repeats are judged by the names it wrote (_nothing_new)
            written.update(WORDS.findall(action))
        out.append(item)
    if traj.outcome != "failure" and domain is Domain.SHELL:
        _mark_reproductions(out)
    return out


def _nothing_new(before: str, now: str, written: set[str], domain: Domain) -> bool:
    """Return True when an observation adds nothing to the same action's last one but names the run itself wrote."""
    if before == now:
        return True
    if domain is not Domain.SHELL:
        return False
    old, seen = set(before.split()), set(now.split())
    new = seen - old
    # `ls` again after creating reproduce.py: only the run's own file names are new, nothing went away.
    return old <= seen and len(new) <= MAX_OWN_NEW_WORDS and all(
        re.search(r"[./]", w) and w.strip("/*@") in written for w in new
    )


def is_reading(action: str) -> bool:
    """Return True for a command that only reads (cat, grep, sed -n, git diff, ls, an editor's open or search)."""
    first = action.strip().splitlines()[0] if action.strip() else ""
    if re.search(r"(?<![\d&])>(?!&)|\bsed\s+(?:-\w+\s+)*-i|\btee\b|\brm\b|\bmv\b|\bcp\b", first):
        return False
    key = check_key(first)
    return bool(key) and (key[0] in READING or key[:2] in (("git", "diff"), ("git", "log"), ("git", "show"),
                                                             ("git", "status"), ("git", "grep")))


def check_key(action: str) -> tuple[str, ...]:
    """Return what identifies a check command: its program and first argument, past `cd ... &&` and sudo."""
    segments = [s.strip() for s in SEGMENTS.split(action.splitlines()[0]) if s.strip()]
    while len(segments) > 1 and segments[0].split()[0] == "cd":
        segments.pop(0)
    words = [w for w in (segments[0].split() if segments else []) if "=" not in w]
    while words and words[0] in WRAPPERS:
        words.pop(0)
    args = [w.split("::")[0] for w in words[1:] if not w.startswith("-")]
    return (words[0], *args[:1]) if words else ()


def _mark_reproductions(judged: list[Judged]) -> None:
    """Mark the first failure of a check that passed later, after other work: it showed the problem the run fixed."""
    shown: set[tuple[str, ...]] = set()
    for pos, item in enumerate(judged):
        key = check_key(item.action)
        if item.verdict is not Verdict.FAILED or not key:
            continue
        later = judged[pos + 1 :]
        passed = next((n for n, j in enumerate(later) if j.verdict is Verdict.KEPT and check_key(j.action) == key), None)
        if passed is None or not any(j.verdict is Verdict.KEPT for j in later[:passed]):
            continue
        # A failure after the run began editing, or a later one of the same check, only says the fix was not done
        # yet: neither a step nor a pitfall.
        edited = any(j.verdict is Verdict.KEPT and EDITS.search(j.action.splitlines()[0]) for j in judged[:pos])
        item.verdict = Verdict.REPEATED if key in shown or edited else Verdict.REPRODUCED
        shown.add(key)
