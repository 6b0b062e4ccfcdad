"""Attempts at one task: where the store holds successful and failed runs of the same task, each success's script
says what it did differently from the failures (distilled from the group, offline or with a model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from . import boundary
from .distill import Distiller, offline_script
from .pool import CallPool
from .records import Memory, Script, Trajectory, render_memory
from .store import Store
from .tokens import count_tokens

# Failed attempts a script is compared with: the most recent ones; more make the prompt long and say little more.
MAX_FAILURES = 5


def contrast_groups(
    store: Store, added: Iterable[int], distiller: Distiller, redactor: boundary.Redactor | None = None,
    warn: Callable[[str], None] | None = None, jobs: int = 1,
) -> int:
    """Rewrite the scripts of successful memories whose task also has failed runs; return how many were rewritten.

    Only what `added` (memory ids new in this ingest) changes is redistilled: a new success, or a success whose
    failed attempts now include a new one. Each rewrite is a new version ("contrasted"), stored as it is made; a
    script that already says the same is left alone, so running this again changes nothing. With a model, the
    calls run on `jobs` threads.
    """
    new = set(added)
    tasks = {m.task for m in store.memories.get_many(list(new))}
    groups: dict[tuple[str, str], list[Memory]] = {}
    for memory in store.memories.attempts(list(tasks)):
        # Within a scope only: one team's failed runs never find their way into another team's scripts.
        groups.setdefault((memory.scope, memory.task.strip().lower()), []).append(memory)
    todo: list[tuple[Memory, Trajectory, list[Trajectory]]] = []
    for memories in groups.values():
        failures = [m for m in memories if m.outcome == "failure"][-MAX_FAILURES:]
        successes = [m for m in memories if m.outcome == "success" and m.status == "active" and m.build != "trajectory"]
        if not failures or not successes:
            continue
        failures_new = any(m.id in new for m in failures)
        failed_runs: list[Trajectory] = []
        for memory in successes:
            if not failures_new and memory.id not in new:
                continue  # contrasted with these same failures when it or they came in
            failed_runs = failed_runs or [store.memories.trajectory(m.trajectory_id) for m in failures]
            todo.append((memory, store.memories.trajectory(memory.trajectory_id), failed_runs))
    rewritten = 0

    def revise(memory: Memory, script: Script, failed_runs: Sequence[Trajectory]) -> None:
        nonlocal rewritten
        script, flag = boundary.check_script(script, redactor)
        if script.text == (memory.script or ""):
            return
        tokens = count_tokens(render_memory(script.text, memory.trajectory))
        reason = f"compared with {len(failed_runs)} failed attempt{'s' if len(failed_runs) > 1 else ''}"
        store.memories.revise(memory.id, script.text, memory.trajectory, script.model, script.prompt_version,
                              tokens, "contrasted", reason, flag)
        rewritten += 1

    if not distiller.online:
        for memory, run, failed_runs in todo:
            revise(memory, distiller.distill(run, failed_runs), failed_runs)
        return rewritten

    def answered(job: tuple[Memory, Trajectory, list[Trajectory]], script: Script | None) -> None:
        memory, run, failed_runs = job
        if script is None:
            distiller.fallbacks += 1
            script = offline_script(run, failed_runs)
        revise(memory, script, failed_runs)

    with CallPool[tuple[Memory, Trajectory, list[Trajectory]], Script | None](jobs) as pool:
        for job in todo:
            for done in pool.submit(job, partial(distiller.ask, job[1], job[2])):
                answered(*done)
        for done in pool.rest():
            answered(*done)
    return rewritten
