"""Trajectory files -> stored trajectories, memories built under a build policy, and task vectors."""

from __future__ import annotations

import heapq
import json
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO

from . import boundary, formats
from .boundary import build_memory
from .distill import Distiller
from .distill_pool import LazyDistiller as _LazyDistiller
from .distill_pool import Waiting as _Waiting
from .embed import DEFAULT_EMBED_MODEL, Embedder, get_embedder, is_default, resolve_embed_model
from .errors import InputError, MempError, StoreError, printable, sqlite_message
from .judge import Judge
from .pool import CallPool, resolve_jobs
from .records import BUILD_POLICIES, OUTCOMES, Script, Trajectory
from .scopes import DEFAULT as DEFAULT_SCOPE
from .scopes import write_scope
from .store import Store

__all__ = ["IngestOptions", "IngestReport", "build_memory", "ingest", "ingest_runs", "store_trajectories"]

# Each batch is one short write transaction: a kill loses at most the batch in flight, and a re-run redoes it.
BATCH = 64

Progress = Callable[[int], None]


@dataclass
class IngestOptions:
    """How to read, judge, filter and build."""

    build: str = "proceduralization"
    model: str | None = None
    embed_model: str | None = None
    fmt: str = "auto"
    read: formats.ReadOptions = field(default_factory=formats.ReadOptions)
    outcomes_files: list[str] = field(default_factory=list)
    redact: bool = True
    redact_patterns: list[str] = field(default_factory=list)
    judge: Judge | None = None
    keep_best: int | None = None
    scope: str | None = None  # the scope new memories go in: else $MEMP_SCOPE, else 'default'
    # Model calls at once (--jobs, else $MEMP_JOBS, else memp_cli.pool.DEFAULT_JOBS); the offline distiller needs none.
    jobs: int | None = None


@dataclass
class IngestReport:
    """What an ingest did."""

    files: int = 0
    read: int = 0
    added: int = 0
    skipped: int = 0
    dropped: int = 0
    judged: int = 0
    redacted: int = 0
    offline_scripts: int = 0
    held: int = 0
    contrasted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    embed_model: str = DEFAULT_EMBED_MODEL
    scope: str = DEFAULT_SCOPE
    # Trajectories skipped because they are stored already in another scope (a run is stored once): scope -> count.
    other_scopes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)


def _batches(items: Iterator[Trajectory], size: int) -> Iterator[list[Trajectory]]:
    while batch := list(islice(items, size)):
        yield batch


def _check(options: IngestOptions) -> None:
    if options.build not in BUILD_POLICIES:
        raise MempError(f"unknown build policy {options.build!r}; choose one of {', '.join(BUILD_POLICIES)}")
    if options.read.outcome is not None and options.read.outcome not in OUTCOMES:
        raise MempError(f"--outcome must be one of {', '.join(OUTCOMES)}")
    if options.keep_best is not None and options.keep_best < 1:
        raise MempError("--keep-best must be at least 1")
    formats.check_format(options.fmt)
    options.scope = write_scope(options.scope)


def _redactor(options: IngestOptions) -> boundary.Redactor | None:
    """Return the redactor the options ask for: the built-in rules and --redact patterns, or None for --no-redact."""
    return boundary.Redactor(options.redact_patterns) if options.redact else None


def _rank_score(traj: Trajectory) -> float:
    """Return what keep-best ranks by: the score, else 1 for a success and 0 for a failure."""
    return traj.score if traj.score is not None else (1.0 if traj.outcome == "success" else 0.0)


def ingest(
    store: Store,
    paths: Sequence[str],
    options: IngestOptions | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> IngestReport:
    """Read, redact and judge every source whole first (so bad input stores nothing), then store new ones in batches."""
    options = options or IngestOptions()
    _check(options)
    embed_id = resolve_embed_model(store, options.embed_model)
    for path in options.outcomes_files:
        options.read.outcomes.update(formats.read_outcomes(formats.Source(Path(path), printable(path))))
    with formats.sources(paths) as (found, outcome_files):
        for src in outcome_files:
            options.read.outcomes.update(formats.read_outcomes(src))
        runs = (traj for src in found for traj in formats.read(src, options.fmt, options.read))
        report = _ingest(store, runs, embed_id, options, on_total, on_progress, warn)
        report.files = len(found)
    return report


def ingest_runs(
    store: Store, runs: Sequence[Trajectory], options: IngestOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest trajectories given in memory (the Python API's dicts) exactly as `ingest` does files; return the report."""
    options = options or IngestOptions()
    _check(options)
    embed_id = resolve_embed_model(store, options.embed_model)
    read_options = options.read
    return _ingest(store, (read_options.settle(_storable(t)) for t in runs), embed_id, options, None, None, warn)


def _storable(traj: Trajectory) -> Trajectory:
    """Return a run given in memory once its text is all UTF-8 (files are checked as they are decoded)."""
    try:
        json.dumps([traj.task, [s.to_dict() for s in traj.steps], traj.metadata, traj.source_id],
                   ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(traj.source_file or "<runs>", traj.source_line,
                         f"holds {printable(exc.object[exc.start:exc.end])}, a lone surrogate, not UTF-8 text") from None
    return traj


def _ingest(
    store: Store,
    runs: Iterator[Trajectory],
    embed_id: str,
    options: IngestOptions,
    on_total: Callable[[int], None] | None,
    on_progress: Progress | None,
    warn: Callable[[str], None] | None,
) -> IngestReport:
    """Read `runs` once, checking, redacting and judging each into a private spool; then store what the spool holds.

    Every input is read whole before anything is stored, so bad input anywhere stores nothing, and it is read once:
    a file that changes meanwhile (appended to, or a pipe) cannot store anything pass 1 did not check. The spool keeps
    memory bounded at any input size; it is a temporary file readable by this process's owner only, gone afterwards.
    """
    report = IngestReport(embed_model=embed_id, scope=write_scope(options.scope))
    redactor = _redactor(options)
    with _spool() as spool:
        keep = _read_pass(store, runs, options, redactor, report, spool)
        if on_total:
            on_total(report.read)
        if report.read == 0:
            return report
        spool.seek(0)
        try:
            _store_pass(store, _spooled(spool), keep, embed_id, options, on_progress, warn, report, redactor)
        except Exception as exc:
            if not _disk_full(exc):
                raise
            done = (f"{report.added} memories from this command were stored before it filled" if report.added
                    else "nothing from this command was stored")
            raise StoreError(f"the disk is full: {done}; free some space and run it again, which stores the rest "
                             f"({exc})") from None
    report.redacted = redactor.masked if redactor else 0
    return report


@contextmanager
def _spool() -> Iterator[IO[bytes]]:
    """Yield a temporary file for the checked runs: owner-only, unlinked at once, so gone however ingest ends."""
    try:
        handle = tempfile.TemporaryFile(prefix="memp-spool-")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StoreError(f"cannot make ingest's temporary copy of the input ({exc.strerror}); nothing was "
                         "stored") from None
    with handle:
        yield handle


def _read_pass(
    store: Store,
    runs: Iterator[Trajectory],
    options: IngestOptions,
    redactor: boundary.Redactor | None,
    report: IngestReport,
    spool: IO[bytes],
) -> set[str] | None:
    """Check, redact and judge every run into `spool` (batches, pickled); return the ids keep-best keeps, else None."""
    import hashlib

    judged: dict[str, tuple[float, str | None]] = {}
    # Per task (by a digest of its text), a min-heap of its best runs so far as (score, -order, id), keep_best at most.
    ranked: dict[bytes, list[tuple[float, int, str]]] = {}
    # Redacted before anything reads it (the judge's prompt, keep-best's ids, the distiller); the guard's verdict
    # comes at the store (_store_batch), once.
    stream = (redactor.trajectory(t) if redactor is not None else t for t in runs)
    for batch in _batches(stream, BATCH):
        if options.judge is not None:
            known = store.memories.known([t.id for t in batch])
            for traj in batch:
                if traj.id not in known and traj.id not in judged:
                    judged[traj.id] = options.judge.score(traj)
            batch = [_with_judgement(t, judged.get(t.id), options) for t in batch]
        for traj in batch:
            if options.keep_best is not None:
                key = hashlib.blake2b(traj.task.strip().lower().encode("utf-8"), digest_size=16).digest()
                best = ranked.setdefault(key, [])
                heapq.heappush(best, (_rank_score(traj), -report.read, traj.id))
                if len(best) > options.keep_best:
                    heapq.heappop(best)  # the lowest score, the latest of equals: as a stable sort would drop it
            report.read += 1
        try:
            pickle.dump(batch, spool, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as exc:
            raise StoreError(f"cannot write ingest's temporary copy of the input ({exc.strerror}); nothing was "
                             "stored") from None
    report.judged = len(judged)
    if options.keep_best is None:
        return None
    return {tid for best in ranked.values() for _, _, tid in best}


def _spooled(spool: IO[bytes]) -> Iterator[list[Trajectory]]:
    """Yield the batches `_read_pass` wrote to the spool, in order."""
    while True:
        try:
            yield pickle.load(spool)  # this process wrote it, to a file only its owner can read
        except EOFError:
            return


def _store_pass(
    store: Store,
    batches: Iterator[list[Trajectory]],
    keep: set[str] | None,
    embed_id: str,
    options: IngestOptions,
    on_progress: Progress | None,
    warn: Callable[[str], None] | None,
    report: IngestReport,
    redactor: boundary.Redactor | None,
) -> None:
    """Store the spooled runs, each batch one transaction, then contrast and index what was added."""
    scripts = _LazyDistiller(options.model, warn, options.jobs) if options.build != "trajectory" else None
    embedder = get_embedder(None if is_default(embed_id) else embed_id)
    added: list[int] = []
    # Batches run across files: many formats hold one trajectory per file, and embedding is cheaper in bulk.
    for batch in batches:
        size = len(batch)
        if keep is not None:
            batch = [t for t in batch if t.id in keep]
            report.dropped += size - len(batch)
        added.extend(_store_batch(store, batch, options.build, scripts, embedder, embed_id, report, redactor,
                                  report.scope))
        if on_progress:
            on_progress(size)
    if scripts is not None:
        report.held += scripts.finish(store, redactor)
    if scripts and scripts.distiller:
        report.offline_scripts = scripts.distiller.fallbacks
        report.model = scripts.distiller.model_name if scripts.distiller.online else None
    if scripts is not None and added:
        report.contrasted = _contrast(store, added, scripts, redactor)
    if added:
        _index_procedures(store, embedder, embed_id)


def _disk_full(exc: BaseException) -> bool:
    """Return True when `exc` is SQLite saying the disk (or the store's size limit) is full."""
    return sqlite_message(exc) is not None and "disk is full" in str(exc)


def _with_judgement(traj: Trajectory, judgement: tuple[float, str | None] | None, options: IngestOptions) -> Trajectory:
    """Return the trajectory scored by the judge, its outcome decided by the success threshold."""
    if judgement is None:
        return traj
    score, reason = judgement
    assert options.judge is not None
    metadata = {**traj.metadata, "judge": options.judge.name, **({"judge_reason": reason} if reason else {})}
    outcome = "success" if score >= options.read.success_threshold else "failure"
    return replace(traj, score=score, outcome=outcome, metadata=metadata)


def script_for(store: Store, distiller: Distiller, traj: Trajectory) -> Script:
    """Return the script cached for this trajectory, model and prompt version, else a newly distilled one."""
    return store.memories.cached_script(traj.id, distiller.model_name, distiller.version) or distiller.distill(traj)


def store_trajectories(
    store: Store, runs: Sequence[Trajectory], options: IngestOptions, warn: Callable[[str], None] | None = None
) -> list[int]:
    """Store already-read trajectories as memories (as ingest's second pass does); return the new memory ids."""
    embed_id = resolve_embed_model(store, options.embed_model)
    embedder = get_embedder(None if is_default(embed_id) else embed_id)
    scripts = _LazyDistiller(options.model, warn, options.jobs) if options.build != "trajectory" else None
    redactor = _redactor(options)
    report = IngestReport()
    scope = write_scope(options.scope)
    ids: list[int] = []
    for batch in _batches(iter(runs), BATCH):
        ids.extend(_store_batch(store, batch, options.build, scripts, embedder, embed_id, report, redactor, scope))
    if scripts is not None:
        scripts.finish(store, redactor)
    if scripts is not None and ids:
        _contrast(store, ids, scripts, redactor)
    if ids:
        _index_procedures(store, embedder, embed_id)
    return ids


def _index_procedures(store: Store, embedder: Embedder, embed_id: str) -> None:
    """Bring the procedure index (the default recall policy's) up to date now, so the next recall does not wait."""
    from .procedure_index import index_for

    index_for(store, embedder, embed_id)


def _contrast(store: Store, added: Sequence[int], scripts: _LazyDistiller, redactor: boundary.Redactor | None) -> int:
    """Let successes whose task also has failed runs say what they did differently; return how many changed."""
    from .attempts import contrast_groups

    return contrast_groups(store, added, scripts.get(), redactor, scripts.warn, resolve_jobs(scripts.jobs))


# Task vectors kept per embedder: the embedded model gives a text the same vector wherever it is embedded, and runs
# of one task (ALFWorld's trials, retries) share its text, so each task is embedded once. Bounded, oldest dropped.
_VECTOR_CACHE = 4096
_vectors: dict[str, OrderedDict[str, list[float]]] = {}


def _embed_tasks(embedder: Embedder, tasks: Sequence[str]) -> list[list[float]]:
    """Return a vector per task, embedding each distinct text not seen lately once."""
    cache = _vectors.setdefault(embedder.model_id, OrderedDict())
    missing = list(dict.fromkeys(t for t in tasks if t not in cache))
    for task, vector in zip(missing, embedder.embed(missing) if missing else []):
        cache[task] = vector
    out = []
    for task in tasks:
        cache.move_to_end(task)
        out.append(cache[task])
    while len(cache) > _VECTOR_CACHE:
        cache.popitem(last=False)
    return out


def _store_batch(
    store: Store,
    batch: list[Trajectory],
    build: str,
    scripts: _LazyDistiller | None,
    embedder: Embedder,
    embed_id: str,
    report: IngestReport,
    redactor: boundary.Redactor | None,
    scope: str = DEFAULT_SCOPE,
) -> list[int]:
    """Store the new trajectories of a batch in `scope`, in one transaction; return their memory ids.

    With a model, the memories are stored with offline scripts first and the model's arrive after (_LazyDistiller).
    """
    # Every path into the store passes the boundary here, whatever it did before (redacting again changes nothing).
    prepared = [boundary.prepare(t, redactor) for t in batch]
    known = store.memories.scopes_of([p.trajectory.id for p in prepared])
    fresh: dict[str, boundary.Prepared] = {}
    for run in prepared:
        if run.trajectory.id in known or run.trajectory.id in fresh:
            report.skipped += 1
            # A run is stored once (its id is a hash of it): not copied into a second scope, but said so.
            elsewhere = known.get(run.trajectory.id, scope)
            if elsewhere != scope:
                report.other_scopes[elsewhere] = report.other_scopes.get(elsewhere, 0) + 1
        else:
            fresh[run.trajectory.id] = run
    if not fresh:
        return []
    runs = list(fresh.values())
    plans = [scripts.cached(store, run.trajectory) if scripts is not None else (None, False) for run in runs]
    waiting = {run.trajectory.id: _Waiting(run.trajectory, build) for run, (_, ask) in zip(runs, plans) if ask}
    # The model's first calls go out before this batch is written, so the pool is busy while it is.
    later = scripts.ask(store, list(waiting.values()), redactor, wait=False) if scripts is not None else []
    try:
        # Beside the offline distiller's Python, on the other core: the embedding (onnxruntime) on one thread, and on
        # another each memory's record as its script is ready (its token count runs in tiktoken, off the GIL too).
        with ThreadPoolExecutor(2) as side:
            vectors = side.submit(_embed_tasks, embedder, [p.trajectory.task for p in runs])
            made = []
            for run, (cached, ask) in zip(runs, plans):
                script = None if scripts is None else cached or scripts.offline(run.trajectory, ask)
                made.append(side.submit(boundary.new_memory, run, build, script, [], redactor))
            items = [replace(item.result(), vector=vector, scope=scope) for item, vector in zip(made, vectors.result())]
    except BaseException:
        if scripts is not None:
            scripts.close()  # nothing of this batch is stored: the calls sent for it are not waited for
        raise
    added = store.memories.add(items, embed_id)
    report.added += len(added)
    report.skipped += len(items) - len(added)
    for item in items:
        if item.trajectory.id in added:
            report.held += bool(item.flag)
            outcome = str(item.trajectory.outcome)
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        if (wait := waiting.get(item.trajectory.id)) is not None:
            wait.dropped = item.trajectory.id not in added
            wait.memory_id = added.get(item.trajectory.id)
            wait.pending, wait.flag = (item.script.text if item.script else None), item.flag
    if scripts is not None:
        scripts.stored(store, redactor)
        scripts.ask(store, later, redactor)
    return list(added.values())


def rebuild_scripts(
    store: Store,
    model: str | None = None,
    everything: bool = False,
    warn: Callable[[str], None] | None = None,
    jobs: int | None = None,
) -> dict[str, object]:
    """Redo scripts with a model (offline-built ones, or all); return counts. Each memory is its own transaction.

    The model is asked on a pool of `jobs` threads; each answer is stored as it arrives, so a kill leaves the rest
    as they were, for the next build.
    """
    distiller = Distiller(model, warn=warn)
    if not distiller.online:
        raise MempError(
            f"no usable model to build scripts with ({distiller.model_name}); pass -m/--model or set a key with "
            "`llm keys set`"
        )
    counts = {"rebuilt": 0, "failed": 0, "held": 0}

    def finish(memory_id: int, traj: Trajectory, build: str, script: Script | None) -> None:
        if script is None:
            counts["failed"] += 1  # the model failed on this one; the offline script stays until the next build
            return
        script, held = boundary.check_script(script, boundary.Redactor())
        _, tokens = build_memory(traj, build, script)
        store.memories.set_script(memory_id, traj.id, script, tokens, held)
        counts["rebuilt"] += 1
        counts["held"] += bool(held)

    with CallPool[tuple[int, Trajectory, str], Script | None](resolve_jobs(jobs)) as pool:
        for memory_id, trajectory_id, build in store.memories.scripts_to_rebuild(everything):
            traj = store.memories.trajectory(trajectory_id)
            cached = store.memories.cached_script(trajectory_id, distiller.model_name, distiller.version)
            if cached is not None:
                finish(memory_id, traj, build, cached)
                continue
            for (done_id, done_traj, done_build), script in pool.submit(
                (memory_id, traj, build), partial(distiller.ask, traj)
            ):
                finish(done_id, done_traj, done_build, script)
        for (done_id, done_traj, done_build), script in pool.rest():
            finish(done_id, done_traj, done_build, script)
    return {"model": distiller.model_name, **counts}
