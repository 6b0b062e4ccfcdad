"""memp from Python: the same functions the CLI calls, on one open store.

    from memp_cli import Memp

    mem = Memp("agent.db")
    mem.ingest("runs/")
    recall = mem.recall("restart nginx after a config change")
    prompt_block = mem.prompt(recall)
    ...run the agent...
    mem.update(recall.id, outcome="failure", trajectory={"task": ..., "steps": [...]})
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import records
from .choices import BuildPolicy, Outcome, Status, values
from .errors import MempError
from .formats import native
from .ingest import IngestOptions, IngestReport, ingest, ingest_runs
from .output import DEFAULT_PROMPT_TOKENS
from .prune import Retirement, Rules, plan_store
from .recall import recall, recall_many
from .records import Recall, Trajectory
from .scopes import read_scopes, write_scope
from .store import Store, open_store
from .update import UpdateReport, report, revert

if TYPE_CHECKING:
    from typing_extensions import Self

STATUSES, BUILDS, OUTCOMES = values(Status), values(BuildPolicy), values(Outcome)


class Memp:
    """A memp store, opened once; every method is one CLI command.

    `scope` is where new memories go and what recall, list and prune search unless told otherwise (`scopes=`: a
    name, a list, or "*" for every scope); default $MEMP_SCOPE, else 'default'.
    """

    def __init__(self, db: str | Path | None = None, model: str | None = None, embed_model: str | None = None,
                 scope: str | None = None):
        self._scope = scope and write_scope(scope)  # checked before the store is opened
        self.scope = write_scope(scope)
        self.store: Store = open_store(db)
        self.model = model
        self.embed_model = embed_model

    def _scopes(self, scopes: str | Sequence[str] | None) -> builtins.list[str] | None:
        """Return the scopes a read searches: those asked for ("*": all), else this Memp's scope."""
        return read_scopes(scopes) if scopes else [self.scope]

    def ingest(self, *items: str | Path | Trajectory | dict[str, Any], **options: Any) -> IngestReport:
        """Ingest files or folders, or runs given as Trajectory records or native-format dicts (not both at once).

        Options are IngestOptions fields (build, fmt, keep_best, redact, ...). Runs pass the same boundary as files:
        redacted in every field, held back from recall when they read like instructions.
        """
        opts = IngestOptions(model=self.model, embed_model=self.embed_model, **{"scope": self.scope, **options})
        runs = [native.parse_line(i, "<api>", n) if isinstance(i, dict) else i for n, i in enumerate(items, 1)]
        paths = [str(r) for r in runs if isinstance(r, (str, Path))]
        given = [r for r in runs if isinstance(r, Trajectory)]
        if paths and given:
            raise MempError("ingest takes paths or runs, not both in one call")
        return ingest_runs(self.store, given, opts) if given else ingest(self.store, paths, opts)

    def recall(self, task: str, k: int = 3, scopes: str | Sequence[str] | None = None, **options: Any) -> Recall:
        """Recall the memories of `scopes` that best fit `task` (options: policy, min_score, max_tokens, rank)."""
        return recall(self.store, task, k, embed_model=self.embed_model, scopes=self._scopes(scopes), **options)

    def recall_many(
        self, tasks: Sequence[str], k: int = 3, scopes: str | Sequence[str] | None = None, **options: Any
    ) -> builtins.list[Recall]:
        """Recall for many tasks at once: embedded side by side on every core, logged in one write."""
        return recall_many(self.store, tasks, k, embed_model=self.embed_model, scopes=self._scopes(scopes), **options)

    def prompt(self, result: Recall, max_tokens: int | None = DEFAULT_PROMPT_TOKENS) -> str:
        """Return a recall as a block to paste into an agent's prompt, fenced, labelled as data and capped at
        `max_tokens` (None or 0: no cap)."""
        from .output import prompt_block

        return prompt_block(result, max_tokens)

    def update(
        self,
        recall_id: str | None = None,
        memory_ids: Sequence[int] = (),
        outcome: str | None = None,
        score: float | None = None,
        trajectory: Trajectory | dict[str, Any] | None = None,
        **options: Any,
    ) -> UpdateReport:
        """Report how a run went (options: policy, every, success_threshold, build, scope); the run is redacted first.

        A new run goes in `scope`, else this Memp's scope when one was given, else the best memory used's scope.
        """
        run = native.parse_line(trajectory, "<update>", 1) if isinstance(trajectory, dict) else trajectory
        options.setdefault("scope", self._scope)
        return report(
            self.store, recall_id, memory_ids, outcome, score, trajectory=run, model=self.model, **options
        )

    def prune(
        self, apply: bool = False, scopes: str | Sequence[str] | None = None, **rules: Any
    ) -> builtins.list[Retirement]:
        """Return the prune plan for `scopes` (rules are Rules fields); carry it out with apply=True."""
        return plan_store(self.store, Rules(**rules), apply, self._scopes(scopes))[0]

    def get(self, memory_id: int) -> records.Memory:
        """Return one stored memory (NotFoundError when there is none)."""
        return self.store.memories.get(memory_id)

    show = get

    # Inside the class body `list` names this method: the annotations here say builtins.list.
    def list(
        self, status: str | None = None, build: str | None = None, outcome: str | None = None,
        limit: int | None = None, scopes: str | Sequence[str] | None = None,
    ) -> builtins.list[records.Memory]:
        """Return stored memories of `scopes`, newest first, filtered by status, build policy and their run's outcome."""
        filters = (("status", status, STATUSES), ("build", build, BUILDS), ("outcome", outcome, OUTCOMES))
        for name, value, allowed in filters:
            if value is not None and value not in allowed:
                raise MempError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return self.store.memories.list(limit=limit, build=build, outcome=outcome, status=status,
                                        scopes=self._scopes(scopes))

    def retire(self, memory_id: int, reason: str = "retired from the Python API") -> records.Memory:
        """Keep a memory out of recall (restorable with `restore`); return it as it now is."""
        self.store.memories.retire(memory_id, reason)
        return self.store.memories.get(memory_id)

    def restore(self, memory_id: int) -> records.Memory:
        """Bring a retired memory back into recall; return it as it now is."""
        self.store.memories.restore(memory_id)
        return self.store.memories.get(memory_id)

    def history(self, memory_id: int) -> builtins.list[dict[str, Any]]:
        """Return every change to a memory."""
        return self.store.memories.history(memory_id)

    def revert(self, memory_id: int, version: int) -> int:
        """Restore a memory's content at `version`; return the new version number."""
        return revert(self.store, memory_id, version)

    def stats(self) -> dict[str, Any]:
        """Return counts of what is stored (every scope; "scopes" counts each one's active memories)."""
        return self.store.memories.stats()

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
