"""Household worlds (ALFWorld-style): where the agent is decides what it can act on.

Search loops fold into one "find" step, take/put detours the task never asked for are dropped, an act at a place
the run had not gone to implies the walk there, and a checker says which steps act somewhere else.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .steps import Entry, Judged, Kind, Verdict

GO = re.compile(r"^go to (?P<place>.+)$", re.IGNORECASE)
TAKE = re.compile(r"^(?:take|pick up) (?P<obj>.+?) from (?P<place>.+)$", re.IGNORECASE)
PUT = re.compile(r"^(?:put|move|place) (?P<obj>.+?) (?:in/on|into|onto|in|on|to) (?P<place>.+)$", re.IGNORECASE)
WITH = re.compile(r"^(?P<verb>clean|heat|cool) (?P<obj>.+?) with (?P<place>.+)$", re.IGNORECASE)
OPEN = re.compile(r"^(?:open|close) (?P<place>.+)$", re.IGNORECASE)
USE = re.compile(r"^(?:use|toggle) (?P<obj>.+)$", re.IGNORECASE)
HOUSEHOLD = re.compile(
    r"^(?:go to|take|pick up|put|move|place|clean|heat|cool|slice|open|close|use|toggle|examine|look|inventory)\b",
    re.IGNORECASE,
)
ACTS = re.compile(r"^(?:take|pick up|put|move|place|clean|heat|cool|slice|use|toggle)\b", re.IGNORECASE)
ENTITY = re.compile(r"\b([a-z]+) (\d+)\b")
# Words of a task that ask for an action the run must take ("a clean mug": clean it), and counts ("two").
STATE_VERBS = {"clean": "clean", "hot": "heat", "heat": "heat", "warm": "heat", "cool": "cool", "cold": "cool",
               "chilled": "cool", "sliced": "slice", "slice": "slice"}
COUNTS = {"two": 2, "three": 3, "four": 4}
FOUND_AT = re.compile(r"\(found at (?P<place>.+?) in the example run\)")
STEP_LINE = re.compile(r"^\d+\.\s+(?P<text>.*)$")


def kinds(actions: list[str]) -> set[str]:
    """Return the kinds of thing the actions name ("mug 2" -> "mug")."""
    return set().union(*map(_kinds_in, actions))


# A world's actions repeat across its runs ("go to countertop 1"): what one action names is worked out once.
@lru_cache(maxsize=16384)
def _kinds_in(action: str) -> frozenset[str]:
    return frozenset(w for w, _ in ENTITY.findall(action.lower()))


def task_forms(task: str, known: set[str]) -> set[str]:
    """Return the task's words in the forms the run spells kinds: "desk lamp" -> "desklamp", "bars" -> "bar"."""
    words = re.findall(r"[a-z]+", task.lower())
    forms: set[str] = set()
    i = 0
    while i < len(words):
        pair = words[i] + words[i + 1] if i + 1 < len(words) else ""
        # "desk lamp" names a desklamp; its "desk" then names no desk.
        if pair and (pair in known or pair.removesuffix("s") in known):
            forms |= {pair, pair.removesuffix("s")}
            i += 2
            continue
        forms |= {words[i], words[i].removesuffix("s")}
        i += 1
    return forms


@lru_cache(maxsize=16384)
def place_of(action: str) -> str | None:
    """Return the place an action acts at (take from, put in, clean with, open), if it names one."""
    m = TAKE.match(action) or PUT.match(action) or WITH.match(action) or OPEN.match(action)
    return m["place"] if m else None


def mark_detours(judged: list[Judged], task: str) -> None:
    """Mark take/put pairs that moved a thing where the task does not name, or back where it was: undone work."""
    kept = [j for j in judged if j.verdict is Verdict.KEPT]
    forms = task_forms(task, kinds([j.action for j in kept]))
    for pos, item in enumerate(kept):
        take = TAKE.match(item.action)
        if not take:
            continue
        for later in kept[pos + 1 :]:
            put = PUT.match(later.action)
            if put and put["obj"] == take["obj"]:
                if put["place"].split()[0].lower() not in forms or put["place"] == take["place"]:
                    item.verdict = later.verdict = Verdict.UNDONE
                break


def _visits(kept: list[Judged]) -> list[list[Judged]]:
    """Return the actions grouped by the place they happened at, each group opening with its `go to`."""
    visits: list[list[Judged]] = []
    here: str | None = None
    for j in kept:
        at = place_of(j.action)
        if not GO.match(j.action) and at is not None and at != here:
            # The run acted at a place it had not gone to (an expert planner may): going there is the step it implies.
            visits.append([Judged(j.index, f"go to {at}", "", Verdict.KEPT)])
            here = at
        go = GO.match(j.action)
        if go:
            here = go["place"]
            visits.append([j])
        elif visits:
            visits[-1].append(j)
        else:
            visits.append([j])
    return visits


def collapse(kept: list[Judged]) -> list[Entry]:
    """Return the kept actions as entries, with visits that found nothing to act on folded into a find step."""
    entries: list[Entry] = []
    searched: list[list[Judged]] = []
    # Places a search opened and left open: a later step there needs them open, and in a new room they are closed.
    left_open: set[str] = set()
    for visit in _visits(kept):
        go = GO.match(visit[0].action)
        acted = [j for j in visit if ACTS.match(j.action)]
        if go and not acted:
            searched.append(visit)  # went, looked (maybe opened), found nothing to act on: part of a search
            for j in visit:
                door = OPEN.match(j.action)
                if door:
                    (left_open.add if j.action.lower().startswith("open") else left_open.discard)(door["place"].lower())
            continue
        if go and go["place"].lower() in left_open and not any(OPEN.match(j.action) for j in visit):
            place = go["place"]
            visit = [visit[0], Judged(visit[0].index, f"open {place}", "", Verdict.KEPT), *visit[1:]]
            left_open.discard(place.lower())
        if go and searched:
            found = go["place"]
            checked = dict.fromkeys(GO.match(v[0].action)["place"] for v in searched)  # type: ignore[index]
            opened = any(OPEN.match(j.action) for v in searched for j in v)
            entries.append(Entry(_sought(acted[0].action), Kind.FIND, [p for p in checked if p != found] + [found],
                                 opened))
            visit = visit[1:]  # the find step leads here
            searched = []
        entries += [Entry(j.action) for j in visit]
    entries += [Entry(j.action) for v in searched for j in v]
    return entries


def _sought(action: str) -> str:
    """Return what a search was for: the object taken or used there, else the place acted on."""
    m = TAKE.match(action) or USE.match(action)
    if m:
        return m["obj"]
    m = PUT.match(action) or WITH.match(action)
    return m["place"] if m else action


def roles(entries: list[Entry]) -> dict[str, str]:
    """Return each thing the run acted on -> its role: the object taken, the target it went to, else its own kind."""
    out: dict[str, str] = {}
    for e in entries:
        for pattern, group, role in ((TAKE, "obj", "object"), (PUT, "obj", "object"), (PUT, "place", "target"),
                                     (WITH, "obj", "object"), (USE, "obj", "")):
            m = pattern.match(e.action)
            if m:
                out.setdefault(m[group].lower(), role or m[group].split()[0].lower())
    return out


def gaps(task: str, done: list[str]) -> list[tuple[str, str]]:
    """Return (what went wrong, what to avoid) for what the task asked and the run's successful actions never did."""
    words = re.findall(r"[a-z]+", task.lower())
    done = [a.lower() for a in done]
    out = [(f"The task asks for '{w}', but no `{v} ...` action succeeded",
            f"skipping the `{v} ...` step that '{w}' in the task asks for")
           for w, v in dict.fromkeys((w, STATE_VERBS[w]) for w in words if w in STATE_VERBS)
           if not any(a.startswith(v + " ") for a in done)]
    word = next((w for w in words if w in COUNTS), None)
    puts = sum(bool(PUT.match(a)) for a in done)
    if word and puts < COUNTS[word]:
        out.append((f"The task asks for {word}, but the run put {puts} in place", f"stopping before {word} are in place"))
    elif not word and not puts and {"put", "place", "move"} & set(words):
        out.append(("The run never put the object in place", "stopping before the object is in place"))
    return out


def place_violations(script: str) -> list[str]:
    """Return the steps of a household script that act somewhere other than where the last go-to or find led.

    Placeholders are read back as their example values first, so that scripts from any distiller can be checked.
    """
    examples = dict(re.findall(r"(\{[^{}]+\}) \(example: ([^()]+?)\)", script))
    here: str | None = None
    wrong: list[str] = []
    for line in script.split("\nSteps:\n", 1)[1].splitlines() if "\nSteps:\n" in script else []:
        m = STEP_LINE.match(line.strip())
        if not m:
            break  # the steps end where the next section (Pitfalls:) begins
        text = m["text"]
        for key, value in examples.items():
            text = text.replace(key, value)
        moved = FOUND_AT.search(text) or GO.match(text)
        if moved:
            here = moved["place"]
            continue
        at = place_of(text)
        if at is not None and at != here:
            wrong.append(f"{line.strip()} (at {here})")
        elif USE.match(text) and here is None:
            wrong.append(f"{line.strip()} (before any go to)")
    return wrong
