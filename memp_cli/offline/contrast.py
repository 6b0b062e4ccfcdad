"""What a successful run did differently from failed attempts at the same task."""

from __future__ import annotations

from ..records import Trajectory
from .procedure import judged_run
from .steps import Verdict, brief

MAX_LISTED = 5


def done(traj: Trajectory) -> list[str]:
    """Return the run's actions that did something, as compared across runs (thoughts, failures, repeats left out)."""
    _, judged = judged_run(traj)
    return [" ".join(j.action.split()) for j in judged if j.verdict in (Verdict.KEPT, Verdict.REPRODUCED)]


def contrast(success: Trajectory, failures: list[Trajectory]) -> list[str]:
    """Return what the successful run did differently from failed attempts at the same task, one finding a line."""
    good = done(success)
    notes: list[str] = []
    bad_all: list[str] = []
    for n, failure in enumerate(failures, 1):
        bad = done(failure)
        bad_all += bad
        label = f"failed attempt {n}" if len(failures) > 1 else "the failed attempt"
        at = next((i for i, (a, b) in enumerate(zip(good, bad)) if a != b), min(len(good), len(bad)))
        if at < len(good) and at < len(bad):
            notes.append(f"At step {at + 1} the success did `{brief(good[at])}` where {label} did `{brief(bad[at])}`")
        elif at < len(good):
            notes.append(f"{label[0].upper()}{label[1:]} stopped after {at} steps; the success went on with "
                         f"`{brief(good[at])}`")
        elif at < len(bad):
            notes.append(f"The success was done after {at} steps; {label} went on with `{brief(bad[at])}`")
    missing = [a for a in dict.fromkeys(good) if a not in bad_all]
    extra = [a for a in dict.fromkeys(bad_all) if a not in good]
    if missing and failures:
        notes.append("Only the success did: " + ", ".join(f"`{brief(a, 80)}`" for a in missing[:MAX_LISTED]))
    if extra:
        notes.append("Only failed attempts did: " + ", ".join(f"`{brief(a, 80)}`" for a in extra[:MAX_LISTED]))
    return notes
