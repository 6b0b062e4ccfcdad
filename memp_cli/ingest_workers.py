"""Ingest's pure work on every core: files read, redacted and guarded, and each new run's record made (its offline
script checked, its text, its token count), in worker processes; the parent embeds the new runs' tasks meanwhile,
and the store, the judge and the model stay in the parent.

The workers run the same functions the parent would (`formats.read`, `boundary.prepare`, `offline_script`,
`boundary.new_memory`), so what is stored is the same; only where the CPU time goes changes. A worker asks the store
(its own read-only use of it) which runs it holds already, so a re-ingest distils nothing. Results come back in the
order asked, at most WINDOW tasks a worker in flight, so memory stays bounded whatever the input's size. A worker's
error (a bad line in a file) comes back as a value and is raised in the parent, as reading there would.
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
    """Return how many worker processes ingest starts: $MEMP_WORKERS, else one per core this process may use (1: none).

    Not fewer when the load average is high: an ingest run just before leaves it high for a minute on an idle
    machine, and even on two busy cores two workers measured 0.8-0.9x the wall time of one process.
    """
    raw = os.environ.get("MEMP_WORKERS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise MempError(f"$MEMP_WORKERS must be a whole number, not {raw!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this system
        return max(1, os.cpu_count() or 1)


# -- in the workers -------------------------------------------------------------------------------------------------

_state: dict[str, Any] = {}


@dataclass(frozen=True)
class Setup:
    """What every worker is told once: how to read and redact, the build, and where the store is (to skip runs
    stored already); `make` False when runs are judged first (the judge's words change them)."""

    redactor: boundary.Redactor | None
    fmt: str
    options: formats.ReadOptions
    build: str
    make: bool
    store: str | None
    schema: str | None


def _init(setup: Setup) -> None:
    if setup.redactor is not None:
        setup.redactor.masked = 0  # this worker's copy counts its own masks, which the parent adds to its own
    _state["setup"] = setup


def _masked() -> int:
    """Return how many secrets this worker's redactor masked since last asked (the parent adds them up)."""
    redactor = _state["setup"].redactor
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


def _stored(ids: list[str]) -> set[str]:
    """Return which of the ids the store holds already (none when it cannot be read from here)."""
    setup: Setup = _state["setup"]
    if setup.store is None:
        return set()
    if "store" not in _state:
        from .store import open_store

        try:
            _state["store"] = open_store(setup.store, setup.schema)
        except MempError:
            _state["store"] = None
    store = _state["store"]
    return set() if store is None else store.memories.known(ids)


Parts = tuple[Script | None, str | None, int, str | None]


def _made(prepared: list[boundary.Prepared]) -> list[tuple[boundary.Prepared, Parts | None]]:
    """Return each run with its memory's parts (script, text, tokens, flag), made for the runs not stored yet."""
    setup: Setup = _state["setup"]
    if not setup.make:
        return [(p, None) for p in prepared]
    known = _stored([p.trajectory.id for p in prepared])
    out: list[tuple[boundary.Prepared, Parts | None]] = []
    for p in prepared:
        if p.trajectory.id in known:
            out.append((p, None))
            continue
        item = derive(p, setup.build, setup.redactor)
        out.append((p, (item.script, item.trajectory_text, item.tokens, item.flag)))
    return out


def _read_files(sources: Sequence[formats.Source]) -> tuple[str, Any, int]:
    setup: Setup = _state["setup"]
    try:
        prepared = [boundary.prepare(t, setup.redactor) for src in sources
                    for t in formats.read(src, setup.fmt, setup.options)]
        made = _made(prepared)
    except Exception as exc:  # noqa: BLE001 - raised again in the parent
        return "error", _failure(exc), 0
    return "ok", made, _masked()


def _prepare_runs(runs: Sequence[Trajectory]) -> tuple[str, Any, int]:
    try:
        made = _made([boundary.prepare(t, _state["setup"].redactor) for t in runs])
    except Exception as exc:  # noqa: BLE001
        return "error", _failure(exc), 0
    return "ok", made, _masked()


def derive(prepared: boundary.Prepared, build: str, redactor: boundary.Redactor | None) -> NewMemory:
    """Return the store's record for a new run, its vector still to come: its offline script (none for the
    `trajectory` build) checked, its text and token count."""
    script = offline_script(prepared.trajectory) if build != "trajectory" else None
    return boundary.new_memory(prepared, build, script, [], redactor)


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

    def __init__(self, count: int, setup: Setup) -> None:
        import multiprocessing

        self.count = count
        self.setup = setup
        # Forked, the workers start at once with memp already imported; with other threads about (a progress bar's),
        # a fork could copy a lock one of them holds, so then they start from a fresh interpreter instead.
        method = "fork" if threading.active_count() == 1 else "forkserver"
        if method == "fork":
            _warm()
        context = multiprocessing.get_context(method)
        self._pool = context.Pool(count, initializer=_init, initargs=(setup,))

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
        if self.setup.redactor is not None:
            self.setup.redactor.masked += masked
        return list(value)

    def read(self, sources: Sequence[formats.Source]) -> Iterator[tuple[boundary.Prepared, NewMemory | None]]:
        """Yield every run of `sources` past the boundary, in order, with its memory's record (vector to come) when
        the workers made one: small files read by the workers, large ones streamed here and their runs sent on."""
        for batch in self._ordered(self._read_calls(sources)):
            for prepared, parts in batch:
                if parts is None:
                    yield prepared, None
                    continue
                script, text, tokens, flag = parts
                yield prepared, NewMemory(prepared.trajectory, self.setup.build, script, text, tokens, [], flag)

    def _read_calls(self, sources: Sequence[formats.Source]) -> Iterator[tuple[Any, Any]]:
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
            for traj in formats.read(src, self.setup.fmt, self.setup.options):
                runs.append(traj)
                if len(runs) >= CHUNK:
                    yield _prepare_runs, runs
                    runs = []
            if runs:
                yield _prepare_runs, runs
        if small:
            yield _read_files, small


def _warm() -> None:
    """Load what every worker needs once, here, so forked workers share it rather than each loading its own (the
    token encoding and detect-secrets' rules take ~1.5 s of CPU together)."""
    from . import secrets
    from .offline import procedure  # noqa: F401 - imported for the workers
    from .tokens import count_tokens

    secrets.detector_rules()
    boundary.flag("warm up the guard's rules")
    count_tokens("warm up the encoding")


def _size(src: formats.Source) -> int:
    try:
        return src.path.stat().st_size
    except OSError:
        return 0  # read in a worker, which reports the file as formats.read does


def worth_workers(sources: Sequence[formats.Source]) -> bool:
    """Return True when `sources` are many files or much text: enough work to be worth starting processes."""
    return len(sources) >= MIN_RUNS or sum(_size(s) for s in sources) >= MIN_BYTES
