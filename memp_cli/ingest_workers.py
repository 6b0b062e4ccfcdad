"""Ingest's pure work on every core: files read, redacted and guarded, and each new run's script checked and counted,
in worker processes; the store, the judge, the model and the embedder stay in the parent.

The workers run the same functions the parent would (`formats.read`, `boundary.prepare`, `offline_script`,
`boundary.new_memory`), so what is stored is the same; only where the CPU time is spent changes. Results come back
in the order asked, at most WINDOW tasks a worker in flight, so memory stays bounded whatever the input's size.
A worker's error (a bad line in a file) comes back as a value and is raised in the parent, as reading there would.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import boundary, formats
from .distill import offline_script
from .errors import InputError, MempError
from .records import Script, Trajectory
from .store import NewMemory

if TYPE_CHECKING:
    from typing_extensions import Self

# Fewer runs (or trajectory files) than this are done in the parent: starting the workers would cost more.
MIN_RUNS = 256
# ... or this much input in all.
MIN_BYTES = 512 * 1024
# Files larger than this are read by the parent, streamed; their runs go to the workers in batches of CHUNK.
WHOLE_FILE_BYTES = 256 * 1024
# Small files sent to a worker at once, and runs of a large file: enough to make a task worth its pickling.
CHUNK = 16
WINDOW = 4


def workers() -> int:
    """Return how many worker processes ingest starts: $MEMP_WORKERS, else one per core (1: none, all in-process)."""
    raw = os.environ.get("MEMP_WORKERS", "").strip()
    try:
        return max(1, int(raw)) if raw else max(1, os.cpu_count() or 1)
    except ValueError:
        raise MempError(f"$MEMP_WORKERS must be a whole number, not {raw!r}") from None


@dataclass(frozen=True)
class Derive:
    """What a new run's memory needs besides its vector: the run past the boundary, its build, and its script (the
    cached one, else None for the offline distiller's; `offline` False for a build that keeps no script)."""

    prepared: boundary.Prepared
    build: str
    cached: Script | None
    offline: bool


# -- in the workers -------------------------------------------------------------------------------------------------

_state: dict[str, Any] = {}


def _init(redactor: boundary.Redactor | None, fmt: str, options: formats.ReadOptions) -> None:
    # Each worker embeds on one thread: the workers themselves are the parallelism.
    os.environ["MEMP_THREADS"] = "1"
    if redactor is not None:
        redactor.masked = 0  # this worker's copy counts its own masks, which the parent adds to its own
    _state.update(redactor=redactor, fmt=fmt, options=options)


def _masked() -> int:
    """Return how many secrets this worker's redactor masked since last asked (the parent adds them up)."""
    redactor: boundary.Redactor | None = _state["redactor"]
    if redactor is None:
        return 0
    count, redactor.masked = redactor.masked, 0
    return count


def _failure(exc: BaseException) -> tuple[str, Any]:
    """Return an error as a value the parent can raise again (InputError keeps its file and line)."""
    if isinstance(exc, InputError):
        return "input", (exc.path, exc.line, exc.message)
    if isinstance(exc, MempError):
        return "memp", (type(exc).__name__, str(exc))
    return "other", f"{type(exc).__name__}: {exc}"


def _read_files(sources: Sequence[formats.Source]) -> tuple[str, Any, int]:
    try:
        prepared = [boundary.prepare(t, _state["redactor"]) for src in sources
                    for t in formats.read(src, _state["fmt"], _state["options"])]
    except Exception as exc:  # noqa: BLE001 - raised again in the parent
        return "error", _failure(exc), 0
    return "ok", prepared, _masked()


def _prepare_runs(runs: Sequence[Trajectory]) -> tuple[str, Any, int]:
    try:
        prepared = [boundary.prepare(t, _state["redactor"]) for t in runs]
    except Exception as exc:  # noqa: BLE001
        return "error", _failure(exc), 0
    return "ok", prepared, _masked()


def derive(job: Derive, redactor: boundary.Redactor | None) -> NewMemory:
    """Return the store's record for a new run, its vector still to come: its script (cached, else the offline
    distiller's) checked, its text and token count."""
    script = job.cached or (offline_script(job.prepared.trajectory) if job.offline else None)
    return boundary.new_memory(job.prepared, job.build, script, [], redactor)


def _parts(item: NewMemory) -> tuple[Script | None, str | None, int, str | None]:
    return item.script, item.trajectory_text, item.tokens, item.flag


def _derive(work: tuple[Sequence[Derive], Sequence[str]]) -> tuple[str, Any, int]:
    jobs, tasks = work
    try:
        # The run itself is the parent's already: only what was made from it comes back.
        made: list[Any] = [_parts(derive(job, _state["redactor"])) for job in jobs]
        if tasks:
            from .embed import get_embedder

            made.append(dict(zip(tasks, get_embedder().embed(list(tasks)))))
    except Exception as exc:  # noqa: BLE001
        return "error", _failure(exc), 0
    return "ok", made, _masked()


# -- in the parent --------------------------------------------------------------------------------------------------


def _raise(failure: tuple[str, Any]) -> None:
    kind, detail = failure
    if kind == "input":
        raise InputError(*detail)
    if kind == "memp":
        raise MempError(detail[1])
    raise MempError(f"an ingest worker failed: {detail}")


class Workers:
    """A pool of worker processes for one ingest; a context manager that stops them however the ingest ends."""

    def __init__(self, count: int, redactor: boundary.Redactor | None, fmt: str, options: formats.ReadOptions) -> None:
        import multiprocessing

        self.count = count
        self.redactor = redactor
        # Forked, the workers start at once with memp already imported; with other threads about (a progress bar's),
        # a fork could copy a lock one of them holds, so then they start from a fresh interpreter instead.
        method = "fork" if threading.active_count() == 1 else "forkserver"
        context = multiprocessing.get_context(method)
        self._pool = context.Pool(count, initializer=_init, initargs=(redactor, fmt, options))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.terminate()
        self._pool.join()

    def _ordered(self, calls: Iterable[tuple[Any, Any]]) -> Iterator[list[Any]]:
        """Yield each call's result list in order, keeping at most WINDOW calls a worker in flight."""
        running: deque[Any] = deque()
        for fn, arg in calls:
            running.append(self._pool.apply_async(fn, (arg,)))
            if len(running) >= WINDOW * self.count:
                yield self._result(running.popleft().get())
        while running:
            yield self._result(running.popleft().get())

    def _result(self, answer: tuple[str, Any, int]) -> list[Any]:
        status, value, masked = answer
        if status == "error":
            _raise(value)
        if self.redactor is not None:
            self.redactor.masked += masked
        return list(value)

    def read(self, sources: Sequence[formats.Source], fmt: str, options: formats.ReadOptions) -> Iterator[
            boundary.Prepared]:
        """Yield every run of `sources` past the boundary, in order: small files read by the workers, large ones
        streamed here with their runs redacted and guarded by the workers."""
        for batch in self._ordered(self._read_calls(sources, fmt, options)):
            yield from batch

    def _read_calls(self, sources: Sequence[formats.Source], fmt: str, options: formats.ReadOptions) -> Iterator[
            tuple[Any, Any]]:
        small: list[formats.Source] = []
        for src in sources:
            if _size(src) <= WHOLE_FILE_BYTES:
                small.append(src)
                if len(small) >= CHUNK:
                    yield _read_files, small
                    small = []
                continue
            if small:
                yield _read_files, small
                small = []
            runs: list[Trajectory] = []
            for traj in formats.read(src, fmt, options):
                runs.append(traj)
                if len(runs) >= CHUNK:
                    yield _prepare_runs, runs
                    runs = []
            if runs:
                yield _prepare_runs, runs
        if small:
            yield _read_files, small

    def derive(self, jobs: Sequence[Derive], tasks: Sequence[str] = ()) -> Derived:
        """Start making the records of `jobs` on the workers, and embedding `tasks` with memp's embedded model
        (distinct texts); return a handle whose `get()` gives the records in order, and `vectors()` the vectors."""
        # A task's runs go to one worker, which embeds it once: split by task, not by position.
        parts: list[tuple[list[int], list[str]]] = [([], []) for _ in range(self.count)]
        wanted = set(tasks)
        for i, job in enumerate(jobs):
            part = parts[hash(job.prepared.trajectory.task) % self.count]
            part[0].append(i)
            if job.prepared.trajectory.task in wanted:
                wanted.discard(job.prepared.trajectory.task)
                part[1].append(job.prepared.trajectory.task)
        started = [(idx, self._pool.apply_async(_derive, (([jobs[i] for i in idx], texts),)))
                   for idx, texts in parts if idx]
        return Derived(self, jobs, started, bool(tasks))


class Derived:
    """Records (and vectors) being made on the workers, put back together with their runs."""

    def __init__(self, owner: Workers, jobs: Sequence[Derive], parts: list[tuple[list[int], Any]],
                 embedding: bool) -> None:
        self._owner, self._jobs, self._parts, self._embedding = owner, jobs, parts, embedding
        self._done: tuple[list[NewMemory], dict[str, list[float]]] | None = None

    def _gather(self) -> tuple[list[NewMemory], dict[str, list[float]]]:
        if self._done is None:
            made: list[NewMemory | None] = [None] * len(self._jobs)
            vectors: dict[str, list[float]] = {}
            for idx, part in self._parts:
                answer = self._owner._result(part.get())
                if self._embedding:
                    vectors.update(answer.pop())
                for i, (script, text, tokens, flag) in zip(idx, answer):
                    job = self._jobs[i]
                    made[i] = NewMemory(job.prepared.trajectory, job.build, script, text, tokens, [], flag)
            self._done = [m for m in made if m is not None], vectors
        return self._done

    def get(self) -> list[NewMemory]:
        """Return the records, in the order of the jobs."""
        return self._gather()[0]

    def vectors(self) -> dict[str, list[float]]:
        """Return task -> vector for the tasks asked to be embedded."""
        return self._gather()[1]


def _size(src: formats.Source) -> int:
    try:
        return src.path.stat().st_size
    except OSError:
        return 0  # read in a worker, which reports the file as formats.read does


def worth_workers(sources: Sequence[formats.Source]) -> bool:
    """Return True when `sources` are many files or much text: enough work to be worth starting processes."""
    return len(sources) >= MIN_RUNS or sum(_size(s) for s in sources) >= MIN_BYTES
