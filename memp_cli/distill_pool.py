"""Scripts for new memories: cached, else offline at once, then the model's from a pool of calls as they arrive.

Ingest stores each new run with its offline script straight away and asks the model for a better one on a bounded
pool (memp_cli/pool.py); each answer replaces the offline script in its own short write. Until it does, the memory is
offline-built: pending, for `memp build` to finish if the process dies first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from . import boundary
from .boundary import build_memory
from .distill import Distiller
from .pool import CallPool, resolve_jobs
from .records import Script, Trajectory
from .store import Store


@dataclass
class Waiting:
    """A run whose script the model is asked for; the memory, stored meanwhile with its offline script, is filled in
    once stored (`memory_id`), or marked `dropped` when another process stored the run first."""

    trajectory: Trajectory
    build: str
    memory_id: int | None = None
    pending: str | None = None
    flag: str | None = None
    dropped: bool = False


class LazyDistiller:
    """Resolves the chat model only when a new trajectory needs a script, so a no-op re-ingest stays quiet.

    With a model, each new memory is stored first with its offline script while the model is asked on a pool of
    `jobs` threads; each answer replaces that script in its own short write as it arrives. A kill leaves every
    answer so far stored, and the rest offline-built, which `memp build` finishes.
    """

    def __init__(self, model: str | None, warn: Callable[[str], None] | None, jobs: int | None = None) -> None:
        self.model, self.warn, self.jobs = model, warn, jobs
        self.distiller: Distiller | None = None
        self._pool: CallPool[Waiting, Script | None] | None = None
        self._early: list[tuple[Waiting, Script | None]] = []  # answers that came before their memory was stored
        self._held = 0

    def get(self) -> Distiller:
        """Return the distiller, resolving the model on first use."""
        if self.distiller is None:
            self.distiller = Distiller(self.model, warn=self.warn)
        return self.distiller

    def cached(self, store: Store, traj: Trajectory) -> tuple[Script | None, bool]:
        """Return the script cached for `traj` under the current model, and whether the model is to be asked."""
        distiller = self.get()
        cached = store.memories.cached_script(traj.id, distiller.model_name, distiller.version)
        return cached, cached is None and distiller.online

    def ask(self, store: Store, waiting: Sequence[Waiting], redactor: boundary.Redactor | None,
            wait: bool = True) -> list[Waiting]:
        """Ask the model for these runs' scripts on the pool, storing the answers that arrive meanwhile; return the
        runs not asked yet (only without `wait`: those the pool had no room for)."""
        if not waiting:
            return []
        distiller = self.get()
        if self._pool is None:
            self._pool = CallPool(resolve_jobs(self.jobs))
        try:
            take = len(waiting) if wait else min(len(waiting), self._pool.room())
            for item in waiting[:take]:
                for done in self._pool.submit(item, partial(distiller.ask, item.trajectory)):
                    self._store(store, *done, redactor)
            if wait:
                for done in self._pool.ready():
                    self._store(store, *done, redactor)
        except BaseException:
            self.close()
            raise
        return list(waiting[take:])

    def stored(self, store: Store, redactor: boundary.Redactor | None) -> None:
        """Store the answers that came before their memories were stored, now that they are."""
        early, self._early = self._early, []
        for item, script in early:
            self._store(store, item, script, redactor)

    def finish(self, store: Store, redactor: boundary.Redactor | None) -> int:
        """Store the answers still to come; return how many memories the model's scripts newly held back."""
        if self._pool is not None:
            try:
                for done in self._pool.rest():
                    self._store(store, *done, redactor)
            finally:
                self.close()
        return self._held

    def close(self) -> None:
        """Stop the pool: calls not started yet are dropped (their memories stay offline-built, pending)."""
        if self._pool is not None:
            self._pool.__exit__(None, None, None)
            self._pool = None

    def _store(self, store: Store, item: Waiting, script: Script | None, redactor: boundary.Redactor | None) -> None:
        if item.dropped:
            return
        if item.memory_id is None:
            self._early.append((item, script))
            return
        if script is None:
            self.get().fallbacks += 1  # no answer: the offline script stays, for `memp build` to redo
            return
        script, flag = boundary.check_script(script, redactor)
        _, tokens = build_memory(item.trajectory, item.build, script)
        store.memories.finish_script(item.memory_id, item.trajectory.id, item.pending, script, tokens,
                                     item.flag or flag)
        self._held += bool(flag and not item.flag)
