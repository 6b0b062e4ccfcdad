"""Outcomes -> credit to the memories used, and the update policies: vanilla, validation, adjustment."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import boundary, formats, models
from .choices import UpdatePolicy, values
from .distill import OFFLINE_MODEL, SCHEMA, SYSTEM, offline_procedure, parse_procedure
from .errors import MalformedAnswer, MempError, ModelError, NotFoundError
from .formats import native
from .records import REPORTS, Memory, Trajectory, render_memory
from .store import Store
from .tokens import count_tokens

POLICIES = values(UpdatePolicy)
DEFAULT_POLICY = "adjustment"
REVISE_VERSION = "revise-v1"
OFFLINE_REVISE = "offline-revise-v1"

REVISE_PROMPT = """A procedure from memory was followed on a new task, and the task failed. Revise the procedure so
the next agent does not fail the same way: keep what still holds, correct or add steps, and add the cause of this
failure to the pitfalls.

<procedure>
{memory}
</procedure>

<failed_run>
{trajectory}
</failed_run>

Answer with one JSON object only: {{"when_to_use": "...", "parameters": ["..."], "steps": ["..."], "pitfalls": ["..."]}}
"""


@dataclass
class UpdateReport:
    """What one `memp update` did."""

    outcome_id: int
    outcome: str
    credited: list[int]
    policy: str
    pending: int = 0
    added: list[int] = field(default_factory=list)
    revised: dict[int, int] = field(default_factory=dict)
    offline_revisions: int = 0
    held: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        data = asdict(self)
        data["revised"] = {str(k): v for k, v in self.revised.items()}
        return data


def decide_outcome(outcome: str | None, score: float | None, threshold: float) -> str:
    """Return success or failure from an explicit outcome or a score against the threshold."""
    if outcome is not None:
        if outcome not in REPORTS:
            raise MempError(f"--outcome must be one of {', '.join(REPORTS)}")
        return outcome
    if score is None:
        raise MempError("say how it went: --outcome success|failure or --score X")
    return "success" if score >= threshold else "failure"


def read_one_trajectory(path: str, fmt: str = "auto") -> Trajectory:
    """Return the single trajectory in a file, past the boundary (redacted in every field)."""
    with formats.sources([path]) as (found, _):
        runs = [t for src in found for t in formats.read(src, fmt)]
    if len(runs) != 1:
        raise MempError(f"{path}: expected one trajectory for this outcome, found {len(runs)}")
    return boundary.prepare(runs[0], boundary.Redactor()).trajectory


def _trajectory_json(traj: Trajectory, scope: str) -> str:
    """Return a run as JSON in the native format, with where it came from and the scope it goes in, for later."""
    return json.dumps(
        {**traj.to_dict(), "source_file": traj.source_file, "source_line": traj.source_line, "scope": scope},
        ensure_ascii=False,
    )


def _run_scope(text: str) -> str:
    """Return the scope a logged run goes in (runs logged before scopes: 'default')."""
    from .scopes import DEFAULT

    scope = json.loads(text).get("scope")
    return scope if isinstance(scope, str) else DEFAULT


def _new_run_scope(store: Store, scope: str | None, used: Sequence[int]) -> str:
    """Return the scope a reported run goes in: `scope`, else $MEMP_SCOPE, else the best memory used's, else default."""
    import os

    from .scopes import ENV, write_scope

    if scope or os.environ.get(ENV) or not used:
        return write_scope(scope)
    # The run followed these memories (best first): it belongs with them.
    found = store.memories.get_many(list(used)[:1])
    return write_scope(found[0].scope if found else None)


def _trajectory_from_json(text: str) -> Trajectory:
    data = json.loads(text)
    return native.parse_line(data, data.get("source_file") or "<update>", data.get("source_line") or 0)


class Reviser:
    """Revises a memory from a failure it led to: with an llm model, else offline by adding the failure as pitfalls."""

    def __init__(self, model: str | None, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self._model: Any = None
        self.offline = 0
        if model == OFFLINE_MODEL:
            return
        try:
            self._model = models.chat_model(models.resolve_name(model))
        except ModelError as exc:
            self.warn(f"{exc}; revising offline")

    def revise(self, memory: Memory, failed: Trajectory) -> tuple[str, str, str]:
        """Return (new script, model, prompt version)."""
        if self._model is not None:
            prompt = REVISE_PROMPT.format(memory=memory.render(), trajectory=failed.render())
            try:
                answer = models.ask_json(
                    self._model, prompt, system=SYSTEM, schema=SCHEMA, parse=parse_procedure, warn=self.warn
                )
                return answer.value.render(), self._model.model_id, REVISE_VERSION
            except MalformedAnswer as exc:
                self.warn(f"{exc}; revising offline")
            except ModelError as exc:
                self.warn(f"{exc}; revising offline for the rest of this run")
                self._model = None
        self.offline += 1
        return offline_revision(memory, failed), OFFLINE_MODEL, OFFLINE_REVISE


def offline_revision(memory: Memory, failed: Trajectory) -> str:
    """Return the memory's script with what went wrong in the failed run added as pitfalls."""
    lessons = [p for p in offline_procedure(failed).pitfalls if not p.startswith("This run failed overall")]
    lessons.append(f"Following this procedure failed on: {failed.task}. Check each step's result before going on.")
    # A failed run is untrusted text: a lesson from it that reads like an order is dropped, not copied into a
    # trusted memory (which the guard would then hold, taking it out of recall).
    lessons = [lesson for lesson in lessons if boundary.flag(lesson) is None]
    script = memory.script or ""
    new = [f"- {lesson}" for lesson in lessons if f"- {lesson}" not in script]
    if not new:
        return script
    if "Pitfalls:" in script:
        return script.rstrip() + "\n" + "\n".join(new)
    return (script.rstrip() + "\n" if script else "") + "Pitfalls:\n" + "\n".join(new)


def resolve_policy(store: Store, policy: str | None) -> str:
    """Return the update policy: the one given, else the store's default, else adjustment."""
    chosen = policy or store.settings.get("update_policy") or DEFAULT_POLICY
    if chosen not in POLICIES:
        raise MempError(f"unknown update policy {chosen!r}; choose one of {', '.join(POLICIES)}")
    return chosen


def report(
    store: Store,
    recall_id: str | None = None,
    memory_ids: Sequence[int] = (),
    outcome: str | None = None,
    score: float | None = None,
    success_threshold: float = 1.0,
    trajectory: Trajectory | None = None,
    policy: str | None = None,
    model: str | None = None,
    every: int | None = None,
    build: str = "proceduralization",
    warn: Callable[[str], None] | None = None,
    scope: str | None = None,
) -> UpdateReport:
    """Credit or blame the memories used, then apply the update policy (now, or once `every` outcomes are pending).

    A new run goes in `scope`, else $MEMP_SCOPE, else the scope of the best-ranked memory used, else 'default'.
    """
    warn = warn or (lambda msg: print(f"memp: {msg}", file=sys.stderr))
    if (recall_id is None) == (not memory_ids):
        raise MempError("name what was used: --recall ID or --memory ID (one of them)")
    decided = decide_outcome(outcome, score, success_threshold)
    chosen = resolve_policy(store, policy)
    batch = every if every is not None else int(store.settings.get("update_every") or 1)
    if batch < 1:
        raise MempError("--every must be at least 1")
    if scope is not None:
        from .scopes import check

        check(scope)
    # A memory named twice was used once: it is credited once, whichever caller (CLI, API, MCP) repeated it.
    used = store.log.recall_memory_ids(recall_id) if recall_id else list(dict.fromkeys(memory_ids))
    missing = set(used) - {m.id for m in store.memories.get_many(used)}
    if missing:
        raise NotFoundError(f"no memory with id {min(missing)}")
    run_json = None
    if trajectory is not None:
        # Every caller's run (a file, the Python API's dict) passes the boundary before the outcome log keeps it.
        prepared = boundary.prepare(trajectory, boundary.Redactor()).trajectory
        # The report says how the run went, whatever the file said.
        run = replace(prepared, outcome=decided, score=score if score is not None else prepared.score)
        run_json = _trajectory_json(run, _new_run_scope(store, scope, used))
    outcome_id = store.log.record_outcome(recall_id, used, decided, score, chosen, run_json, applied=False)
    result = UpdateReport(outcome_id, decided, used, chosen)
    pending = store.log.pending_outcomes()
    if len(pending) >= batch:
        _apply_all(store, pending, model, build, warn, result)
        pending = []
    result.pending = len(pending)
    return result


def flush(
    store: Store, model: str | None = None, build: str = "proceduralization", warn: Callable[[str], None] | None = None
) -> UpdateReport:
    """Apply every pending outcome's policy now."""
    warn = warn or (lambda msg: print(f"memp: {msg}", file=sys.stderr))
    result = UpdateReport(0, "", [], "flush")
    _apply_all(store, store.log.pending_outcomes(), model, build, warn, result)
    return result


# How many times a model revision is made again from the memory's new version when another process revised it
# meanwhile; after that the revision is made offline inside the write, from the version it then finds.
REVISION_ATTEMPTS = 3


@dataclass
class _Draft:
    """A revision of one memory, made from `memory` as it was then (its version is what the write compares)."""

    memory: Memory
    script: str
    model: str
    prompt_version: str
    flag: str | None


class _Stale(Exception):
    """A model revision was made from a version another process has since replaced."""


def _apply_all(
    store: Store, pending: Sequence[dict[str, Any]], model: str | None, build: str, warn: Callable[[str], None],
    result: UpdateReport,
) -> None:
    """Apply each pending outcome exactly once, whatever other processes apply at the same time."""
    reviser: Reviser | None = None
    for item in pending:
        if store.log.is_applied(item["id"]):
            continue  # another process applied it since the list was read: no model call, no run embedded for it
        if reviser is None and _revises(item):
            reviser = Reviser(model, warn)
        _apply(store, item, reviser, model, build, warn, result)
    if reviser is not None:
        result.offline_revisions += reviser.offline


def _revises(item: dict[str, Any]) -> bool:
    """Return whether an outcome's policy revises the memories it names (adjustment after a failure, with a run)."""
    return bool(item["policy"] == "adjustment" and item["outcome"] == "failure" and item["memory_ids"]
                and item["trajectory"])


def _apply(
    store: Store, item: dict[str, Any], reviser: Reviser | None, model: str | None, build: str,
    warn: Callable[[str], None], result: UpdateReport,
) -> None:
    """Carry out one outcome's policy: add the new run as a memory, and revise what led to a failure.

    The run is added first (a memory per trajectory id, so adding it again is a no-op); the revisions and the mark
    that the outcome is applied then land in one write, which claims the outcome: a process that finds it applied
    already writes nothing, and one killed before its commit leaves it pending for the next `--flush`. Revisions
    are compare-and-set on each memory's version: one made from a version another process has replaced is made
    again from the new one, never written over it.
    """
    from .ingest import IngestOptions, store_trajectories

    policy, outcome = item["policy"], item["outcome"]
    run = _trajectory_from_json(item["trajectory"]) if item["trajectory"] else None
    if run is not None and (policy == "vanilla" or outcome == "success"):
        result.added.extend(store_trajectories(store, [run], IngestOptions(build=build, model=model, scope=_run_scope(item["trajectory"])), warn))
    if reviser is None or run is None or not _revises(item):
        with store.write():
            store.log.mark_applied(item["id"])
        return
    for attempt in range(REVISION_ATTEMPTS + 1):
        # The last attempt makes every revision inside the write, offline, from the version it finds there.
        last = attempt == REVISION_ATTEMPTS
        drafts = [] if last else [_draft(reviser, m, run) for m in store.memories.get_many(item["memory_ids"])
                                  if m.status == "active"]
        try:
            with store.write():
                if not store.log.mark_applied(item["id"]):
                    return  # another process applied it meanwhile
                if last:
                    drafts = [_offline_draft(m, run) for m in store.memories.get_many(item["memory_ids"])
                              if m.status == "active"]
                revised = _write_revisions(store, item, drafts, run)
        except _Stale:
            warn(f"a memory outcome {item['id']} revises was revised by another process meanwhile; revising again")
            continue
        for memory_id, (version, held) in revised.items():
            result.revised[memory_id] = version
            result.held += held
        return


def _draft(reviser: Reviser, memory: Memory, run: Trajectory) -> _Draft:
    """Return a revision of `memory` from the failed run, past the boundary (outside any write: it may ask a model)."""
    answer, used_model, version = reviser.revise(memory, run)
    checked = boundary.check_text(answer, boundary.Redactor())
    return _Draft(memory, checked.text, used_model, version, checked.flag)


def _offline_draft(memory: Memory, run: Trajectory) -> _Draft:
    """Return the offline revision of `memory`, past the boundary (cheap enough to make inside a write)."""
    checked = boundary.check_text(offline_revision(memory, run), boundary.Redactor())
    return _Draft(memory, checked.text, OFFLINE_MODEL, OFFLINE_REVISE, checked.flag)


def _write_revisions(
    store: Store, item: dict[str, Any], drafts: Sequence[_Draft], run: Trajectory
) -> dict[int, tuple[int, bool]]:
    """Write the drafts inside the open write; return memory id -> (new version, held). _Stale when one is outdated."""
    out: dict[int, tuple[int, bool]] = {}
    current = {m.id: m for m in store.memories.get_many([d.memory.id for d in drafts])}
    for draft in drafts:
        now = current.get(draft.memory.id)
        if now is None or now.status != "active":
            continue  # retired or held meanwhile: a revision would go unseen, or unreviewed
        if now.version != draft.memory.version:
            if draft.model != OFFLINE_MODEL:
                raise _Stale
            draft = _offline_draft(now, run)  # rebased: made again from the version there is now
        if draft.script == (now.script or ""):
            continue
        tokens = count_tokens(render_memory(draft.script, now.trajectory))
        reason = f"failed in recall {item['recall_id']}" if item["recall_id"] else f"failed (outcome {item['id']})"
        version = store.memories.revise(
            now.id, draft.script, now.trajectory, draft.model, draft.prompt_version, tokens, "revised", reason,
            draft.flag, expected_version=now.version, outcome_id=item["id"],
        )
        out[now.id] = (version, bool(draft.flag))
    return out


def revert(store: Store, memory_id: int, version: int) -> int:
    """Restore a memory's content as it was at `version`, as a new version; return that version number.

    The guard's verdict travels with the text: restored text that differs from what the memory holds now (and was
    approved, if it was held) is checked again, and held back from recall when it reads like an instruction.
    """
    with store.write():
        current = store.memories.get(memory_id)
        script, trajectory, model = store.memories.version_content(memory_id, version)
        changed = [text for text, now in ((script, current.script), (trajectory, current.trajectory))
                   if text and text != now]
        held = next((f for f in (boundary.check_text(t, None).flag for t in changed) if f), None)
        tokens = count_tokens(render_memory(script, trajectory))
        return store.memories.revise(memory_id, script, trajectory, model, None, tokens, "reverted",
                                     f"reverted to v{version}", held, expected_version=current.version)
