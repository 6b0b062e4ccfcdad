"""A bounded pool for model calls: a batch's distillations run side by side, their results come back as they finish.

Only the calls run on the pool's threads; whoever submits (the ingest or build loop) commits each result to the
store itself, on its own thread, so the store never sees two threads. Backoff on rate limits is shared through
memp_cli/models.py (PAUSE), not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from .errors import MempError

K = TypeVar("K")
R = TypeVar("R")

# A remote API answers several calls at once without complaint; more than a few invites its rate limits.
DEFAULT_JOBS = 4
# Calls queued beyond the running ones, per job: enough to keep every thread busy, few enough that a kill leaves
# little waiting (each one waiting is a memory with its offline script, finished by the next `memp build`).
QUEUED_PER_JOB = 2


def resolve_jobs(jobs: int | None) -> int:
    """Return how many model calls run at once: `jobs`, else $MEMP_JOBS, else DEFAULT_JOBS."""
    if jobs is None:
        raw = os.environ.get("MEMP_JOBS", "").strip()
        if not raw:
            return DEFAULT_JOBS
        try:
            jobs = int(raw)
        except ValueError:
            raise MempError(f"$MEMP_JOBS must be a whole number, not {raw!r}") from None
    if jobs < 1:
        raise MempError(f"--jobs must be at least 1, not {jobs}")
    return jobs


class CallPool(Generic[K, R]):
    """Runs calls on `jobs` threads, at most QUEUED_PER_JOB × jobs more waiting; hands back (key, result) pairs."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="memp-model")
        self._running: dict[Future[R], K] = {}

    def __enter__(self) -> CallPool[K, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        # Calls not started are dropped; their memories keep the offline script (pending for `memp build`).
        self._executor.shutdown(wait=exc[0] is None, cancel_futures=True)

    def submit(self, key: K, call: Callable[[], R]) -> list[tuple[K, R]]:
        """Queue `call`; return the calls that finished meanwhile, waiting for some when the queue is full."""
        finished = self._collect(block=False)
        while len(self._running) >= self.jobs * (1 + QUEUED_PER_JOB):
            finished += self._collect(block=True)
        self._running[self._executor.submit(call)] = key
        return finished

    def room(self) -> int:
        """Return how many calls `submit` takes now without waiting."""
        return max(0, self.jobs * (1 + QUEUED_PER_JOB) - len(self._running))

    def ready(self) -> list[tuple[K, R]]:
        """Return the calls finished so far, without waiting."""
        return self._collect(block=False)

    def rest(self) -> Iterator[tuple[K, R]]:
        """Yield every call still running or queued, as each finishes."""
        while self._running:
            yield from self._collect(block=True)

    def _collect(self, block: bool) -> list[tuple[K, R]]:
        if not self._running:
            return []
        if block:
            done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
        else:
            done = {f for f in self._running if f.done()}
        # A call that raised re-raises here, on the caller's thread (the distiller catches model errors itself).
        return [(self._running.pop(f), f.result()) for f in done]
