"""A judged run -> the procedure an agent follows, or, from a failed run, a warning that has no steps at all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..distill import Procedure
from ..records import Trajectory
from . import household
from .judge import BRACKET, domain_of, is_reading, judge
from .params import placeholders, substitute
from .steps import Domain, Entry, Judged, Kind, Verdict, brief, one_line

MAX_STEPS = 30
HEAD_STEPS = 20  # a long run keeps its first steps and its last ones (the final verify and submit)
ACTION_CHARS = 240
MAX_PLACES = 8
MAX_LESSONS = 3
MAX_TRIED = 12
ITEM_ID = re.compile(r"(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9]{6,}")


@dataclass
class FailureReport(Procedure):
    """What a failed run tried and what went wrong; `steps` stays empty and the lessons are the pitfalls."""

    outcome: str = "this run FAILED"
    tried: list[str] = field(default_factory=list)
    went_wrong: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Return the warning as the text an agent reads: what happened and what to avoid, never steps to follow."""
        lines = [f"When to use: {self.when_to_use.strip()}", f"Outcome: {self.outcome}. Do not follow it as a procedure."]
        lines += ["What was tried:", *(f"- {t}" for t in self.tried)]
        if self.went_wrong:
            lines += ["What went wrong:", *(f"- {w}" for w in self.went_wrong)]
        if self.pitfalls:
            lines += ["Avoid:", *(f"- {p}" for p in self.pitfalls)]
        return "\n".join(lines)


def judged_run(traj: Trajectory) -> tuple[Domain, list[Judged]]:
    """Return the run's grammar and the verdict on each of its actions."""
    domain = domain_of(traj)
    judged = judge(traj, domain)
    if domain is Domain.HOUSEHOLD:
        household.mark_detours(judged, traj.task)
    return domain, judged


def offline_procedure(traj: Trajectory) -> Procedure:
    """Return the procedure for a successful run, or a FailureReport (no steps) for a failed one."""
    domain, judged = judged_run(traj)
    entries = _entries(traj, judged, domain)
    task = traj.task.strip()
    when = "Tasks like: " + one_line(task.splitlines()[0] if task else "", 200)
    if traj.outcome == "failure":
        return _failure_report(traj, judged, entries, when, domain)
    names = placeholders(entries, traj.task, domain)
    if len(entries) > MAX_STEPS and domain is Domain.SHELL:
        entries = _fold_reading(entries)
    steps = [_render(e, names, domain) for e in entries]
    if len(steps) > MAX_STEPS:
        tail = MAX_STEPS - HEAD_STEPS - 1
        steps = [*steps[:HEAD_STEPS], f"... ({len(steps) - HEAD_STEPS - tail} more steps in the example run)",
                 *steps[-tail:]]
    shown = "\n".join(steps)
    return Procedure(
        when_to_use=when,
        parameters=[f"{{{name}}} (example: {value})" for value, name in names.items() if f"{{{name}}}" in shown],
        steps=steps or ["(no action in the run succeeded)"],
        pitfalls=_lessons(judged),
    )


def _entries(traj: Trajectory, judged: list[Judged], domain: Domain) -> list[Entry]:
    """Return the lines of the procedure: the kept actions, search loops folded, picks and reproductions marked."""
    kept = [j for j in judged if j.verdict in (Verdict.KEPT, Verdict.REPRODUCED)]
    if domain is Domain.HOUSEHOLD:
        return household.collapse(kept)
    entries = []
    for j in kept:
        kind = Kind.REPRODUCE if j.verdict is Verdict.REPRODUCED else Kind.ACTION
        m = BRACKET.match(j.action) if domain is Domain.WEB else None
        # An item id the task never named, picked from a list a page showed, is a choice to make anew.
        listed = m and any(f"[{m['arg']}]" in (s.observation or "") for s in traj.steps[: j.index])
        if m and listed and ITEM_ID.fullmatch(m["arg"]) and m["arg"].lower() not in traj.task.lower():
            kind = Kind.PICK
        entries.append(Entry(j.action, kind, result=j.result))
    return entries


def _fold_reading(entries: list[Entry]) -> list[Entry]:
    """Return the entries with each run of two or more reading commands folded into one line, for a long run."""
    out: list[Entry] = []
    for e in entries:
        if e.kind is Kind.ACTION and is_reading(e.action):
            if out and out[-1].kind is Kind.READ:
                out[-1].places.append(e.action)
                continue
            if out and out[-1].kind is Kind.ACTION and is_reading(out[-1].action):
                out[-1] = Entry(out[-1].action, Kind.READ, [out[-1].action, e.action])
                continue
        out.append(e)
    return out


def _render(entry: Entry, names: dict[str, str], domain: Domain) -> str:
    if entry.kind is Kind.READ:
        reads = ", ".join(f"`{substitute(brief(a, 60), names, domain)}`" for a in entry.places[:2])
        more = f" and {len(entry.places) - 2} more reads" if len(entry.places) > 2 else ""
        return f"Read the code and output that matter, as with {reads}{more}"
    if entry.kind is Kind.FIND:
        shown = [*entry.places[: MAX_PLACES - 1][: len(entry.places) - 1], entry.places[-1]]
        places = ", ".join(substitute(p, names, domain) for p in shown)
        how = ", opening closed ones" if entry.opened else ""
        return (f"Find {substitute(entry.action, names, domain)}: check places such as {places}{how} "
                f"(found at {substitute(entry.places[-1], names, domain)} in the example run)")
    first, _, rest = entry.action.partition("\n")
    # Only a command's first line takes placeholders: an edit's or heredoc's body is example content.
    text = one_line(substitute(first, names, domain) + ("\n" + rest if rest else ""), ACTION_CHARS)
    if entry.kind is Kind.REPRODUCE:
        return f"Reproduce first: `{text}` (in the example run it failed before the fix: {entry.result})"
    if entry.kind is Kind.PICK:
        m = BRACKET.match(entry.action)
        verb = m["verb"] if m else "pick"
        return f"{verb} the listed result that best matches the task (in the example run: {text})"
    return text


def _lessons(judged: list[Judged]) -> list[str]:
    """Return the run's failed actions as pitfalls, one per distinct failure, with how often it happened."""
    counts: dict[tuple[str, str], int] = {}
    for j in judged:
        if j.verdict is Verdict.FAILED:
            key = (brief(j.action), j.result)
            counts[key] = counts.get(key, 0) + 1
    return [f"`{action}` did not work{f' ({n} times)' if n > 1 else ''}: {result}"
            for (action, result), n in list(counts.items())[:MAX_LESSONS]]


def _failure_report(
    traj: Trajectory, judged: list[Judged], entries: list[Entry], when: str, domain: Domain
) -> FailureReport:
    acted = [j for j in judged if j.verdict is not Verdict.THOUGHT]
    tried = [f"`{brief(j.action)}`{f' (tried {j.repeats + 1} times)' if j.repeats else ''} -> "
             f"{j.result or '(no output)'}{' [failed]' if j.verdict is Verdict.FAILED else ''}"
             for j in acted if j.verdict is not Verdict.REPEATED]
    if len(tried) > MAX_TRIED:
        tail = MAX_TRIED - 9
        tried = [*tried[:8], f"... ({len(tried) - 8 - tail} more actions)", *tried[-tail:]]
    lessons = _lessons(judged)
    wrong = [f"`{brief(j.action)}` failed: {j.result}" for j in acted if j.verdict is Verdict.FAILED][:MAX_LESSONS]
    repeated = [j for j in acted if j.repeats][:2]
    wrong += [f"`{brief(j.action)}` was repeated {j.repeats + 1} times with the same result" for j in repeated]
    missed = household.gaps(traj.task, [j.action for j in acted if j.verdict is Verdict.KEPT]) \
        if domain is Domain.HOUSEHOLD else []
    wrong += [m[0] for m in missed]
    score = f" (score {traj.score:g})" if traj.score is not None else ""
    if acted:
        wrong.append(f"The run stopped{score} after `{brief(acted[-1].action)}`, which gave: "
                     f"{acted[-1].result or '(no output)'}")
    avoid = lessons + [f"repeating `{brief(j.action)}`: it changed nothing" for j in repeated] + [m[1] for m in missed]
    last = [e.action for e in entries if e.kind is not Kind.FIND][-3:]
    if last and not missed:
        avoid.append(f"ending the way this run did ({', '.join(f'`{brief(a, 80)}`' for a in last)}): "
                     "the task was still not done")
    return FailureReport(when_to_use=when, parameters=[], steps=[], pitfalls=avoid, outcome=f"this run FAILED{score}",
                         tried=tried or ["(no action)"], went_wrong=wrong)
