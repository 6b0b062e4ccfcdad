"""Attempts at one task: where the store holds successful and failed runs of the same task, each success's script
says what it did differently from the failures (distilled from the group, offline or with a model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import boundary
from .distill import Distiller
from .records import Memory, render_memory
from .store import Store
from .tokens import count_tokens

# Failed attempts a script is compared with: the most recent ones; more make the prompt long and say little more.
MAX_FAILURES = 5


def contrast_groups(
    store: Store, tasks: Iterable[str], distiller: Distiller, redactor: boundary.Redactor | None = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Rewrite the scripts of successful memories whose task also has failed runs; return how many were rewritten.

    Each rewrite is a new version ("contrasted"); a script that already says the same is left alone, so running
    this again changes nothing.
    """
    groups: dict[tuple[str, str], list[Memory]] = {}
    for memory in store.memories.attempts(list(tasks)):
        # Within a scope only: one team's failed runs never find their way into another team's scripts.
        groups.setdefault((memory.scope, memory.task.strip().lower()), []).append(memory)
    rewritten = 0
    for memories in groups.values():
        failures = [m for m in memories if m.outcome == "failure"][-MAX_FAILURES:]
        successes = [m for m in memories if m.outcome == "success" and m.status == "active" and m.build != "trajectory"]
        if not failures or not successes:
            continue
        failed_runs = [store.memories.trajectory(m.trajectory_id) for m in failures]
        for memory in successes:
            run = store.memories.trajectory(memory.trajectory_id)
            script, flag = boundary.check_script(distiller.distill(run, failed_runs), redactor)
            if script.text == (memory.script or ""):
                continue
            tokens = count_tokens(render_memory(script.text, memory.trajectory))
            reason = f"compared with {len(failed_runs)} failed attempt{'s' if len(failed_runs) > 1 else ''}"
            store.memories.revise(memory.id, script.text, memory.trajectory, script.model, script.prompt_version,
                                  tokens, "contrasted", reason, flag)
            rewritten += 1
    return rewritten
