"""Trajectory files -> stored trajectories, memories built under a build policy, and task vectors."""

from __future__ import annotations

import heapq
import json
import pickle
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import IO

from . import boundary, formats
from .boundary import build_memory
from .distill_pool import LazyDistiller
from .embed import Embedder, get_embedder, is_default, resolve_embed_model
from .errors import InputError, MempError, StoreError, printable, sqlite_message
from .ingest_records import IngestOptions, IngestReport
from .ingest_workers import Setup, Workers, workers, worth_workers
from .records import BUILD_POLICIES, OUTCOMES, Trajectory
from .remember import (
    BATCH,
    Planned,
    ReadBatch,
    Side,
    batches,
    contrast,
    embed_tasks,
    index_procedures,
    plan_batch,
    rebuild_scripts,
    redactor_for,
    store_trajectories,
    write_batch,
)
from .scopes import write_scope
from .store import NewMemory, Store

__all__ = [
    "IngestOptions", "IngestReport", "build_memory", "ingest", "ingest_runs", "rebuild_scripts", "store_trajectories",
]


Progress = Callable[[int], None]


def _check(options: IngestOptions) -> None:
    if options.build not in BUILD_POLICIES:
        raise MempError(f"unknown build policy {options.build!r}; choose one of {', '.join(BUILD_POLICIES)}")
    if options.read.outcome is not None and options.read.outcome not in OUTCOMES:
        raise MempError(f"--outcome must be one of {', '.join(OUTCOMES)}")
    if options.keep_best is not None and options.keep_best < 1:
        raise MempError("--keep-best must be at least 1")
    formats.check_format(options.fmt)
    options.scope = write_scope(options.scope)


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
    redactor = redactor_for(options)
    with formats.sources(paths) as (found, outcome_files):
        for src in outcome_files:
            options.read.outcomes.update(formats.read_outcomes(src))
        with _workers(store, found, redactor, options) as pool:
            runs: Iterator[tuple[boundary.Prepared, NewMemory | None]]
            if pool is not None:
                runs = pool.read(found)
            else:
                runs = ((boundary.prepare(traj, redactor), None) for src in found
                        for traj in formats.read(src, options.fmt, options.read))
            report = _ingest(store, runs, embed_id, options, on_total, on_progress, warn, redactor, pool is not None)
        report.files = len(found)
    return report


@contextmanager
def _workers(store: Store, found: Sequence[formats.Source], redactor: boundary.Redactor | None,
             options: IngestOptions) -> Iterator[Workers | None]:
    """Yield worker processes for an input big enough to be worth them (and a machine with cores to spare), else None.

    The workers make each new run's record too, unless a judge is to score the runs first (its words change them).
    """
    count = workers()
    if count < 2 or not worth_workers(found):
        yield None
        return
    url = getattr(store, "url", None)
    where = str(url or getattr(store, "path", "")) or None
    setup = Setup(redactor, options.fmt, options.read, options.build, options.judge is None, where,
                  getattr(store, "schema", None) if url else None)
    with Workers(count, setup) as pool:
        yield pool


def ingest_runs(
    store: Store, runs: Sequence[Trajectory], options: IngestOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest trajectories given in memory (the Python API's dicts) exactly as `ingest` does files; return the report."""
    options = options or IngestOptions()
    _check(options)
    embed_id = resolve_embed_model(store, options.embed_model)
    read_options = options.read
    redactor = redactor_for(options)
    prepared = ((boundary.prepare(read_options.settle(_storable(t)), redactor), None) for t in runs)
    return _ingest(store, prepared, embed_id, options, None, None, warn, redactor, False)


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
    runs: Iterator[tuple[boundary.Prepared, NewMemory | None]],
    embed_id: str,
    options: IngestOptions,
    on_total: Callable[[int], None] | None,
    on_progress: Progress | None,
    warn: Callable[[str], None] | None,
    redactor: boundary.Redactor | None,
    early: bool,
) -> IngestReport:
    """Read `runs` (past the boundary, some with their records made) once, judging each into a private spool; then
    store what the spool holds. With `early`, the new runs' tasks are embedded as they are read.

    Every input is read whole before anything is stored, so bad input anywhere stores nothing, and it is read once:
    a file that changes meanwhile (appended to, or a pipe) cannot store anything pass 1 did not check. The spool keeps
    memory bounded at any input size; it is a temporary file readable by this process's owner only, gone afterwards.
    """
    report = IngestReport(embed_model=embed_id, scope=write_scope(options.scope))
    with _spool() as spool:
        embedder = get_embedder() if early and is_default(embed_id) else None
        keep = _read_pass(store, runs, options, redactor, report, spool, embedder)
        if on_total:
            on_total(report.read)
        if report.read == 0:
            return report
        spool.seek(0)
        try:
            with closing(_ahead(_spooled(spool))) as spooled:
                _store_pass(store, spooled, keep, embed_id, options, on_progress, warn, report, redactor)
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
    runs: Iterator[tuple[boundary.Prepared, NewMemory | None]],
    options: IngestOptions,
    redactor: boundary.Redactor | None,
    report: IngestReport,
    spool: IO[bytes],
    embedder: Embedder | None,
) -> set[str] | None:
    """Judge every run into `spool` (ReadBatch-es, pickled); return the ids keep-best keeps, else None.

    With `embedder` (memp's own: no calls out), the tasks of runs that came with records are embedded meanwhile.
    """
    import hashlib

    judged: dict[str, tuple[float, str | None]] = {}
    # Per task (by a digest of its text), a min-heap of its best runs so far as (score, -order, id), keep_best at most.
    ranked: dict[bytes, list[tuple[float, int, str]]] = {}
    embedding: deque[tuple[ReadBatch, Future[dict[str, list[float]]] | None]] = deque()
    # Each run comes redacted and guarded (boundary.prepare) before anything reads it: the judge's prompt,
    # keep-best's ids, the distiller.
    with ThreadPoolExecutor(1, thread_name_prefix="memp-embed") as side:
        for pairs in batches(runs, BATCH):
            batch = ReadBatch([p for p, _ in pairs])
            for _, made in pairs:
                if made is not None:
                    batch.made.setdefault(made.trajectory.id, made)  # a run twice in the input: the first is stored
            if options.judge is not None:
                known = store.memories.known([p.trajectory.id for p in batch.runs])
                for p in batch.runs:
                    if p.trajectory.id not in known and p.trajectory.id not in judged:
                        judged[p.trajectory.id] = options.judge.score(p.trajectory)
                # The judge's words join the run: past the boundary again, redacted and guarded with them.
                batch.runs = [p if (j := judged.get(p.trajectory.id)) is None
                              else boundary.prepare(_with_judgement(p.trajectory, j, options), redactor)
                              for p in batch.runs]
            for p in batch.runs:
                if options.keep_best is not None:
                    traj = p.trajectory
                    key = hashlib.blake2b(traj.task.strip().lower().encode("utf-8"), digest_size=16).digest()
                    best = ranked.setdefault(key, [])
                    heapq.heappush(best, (_rank_score(traj), -report.read, traj.id))
                    if len(best) > options.keep_best:
                        heapq.heappop(best)  # the lowest score, the latest of equals: as a stable sort would drop it
                report.read += 1
            tasks = [m.trajectory.task for m in batch.made.values()]
            embedding.append((batch, side.submit(_task_vectors, embedder, tasks) if embedder and tasks else None))
            while len(embedding) > 2 or (embedding and (embedding[0][1] is None or embedding[0][1].done())):
                _spool_batch(spool, *embedding.popleft())
        while embedding:
            _spool_batch(spool, *embedding.popleft())
    report.judged = len(judged)
    if options.keep_best is None:
        return None
    return {tid for best in ranked.values() for _, _, tid in best}


def _task_vectors(embedder: Embedder, tasks: list[str]) -> dict[str, list[float]]:
    """Return task -> vector for the distinct tasks given (each embedded once, as the store pass would)."""
    distinct = list(dict.fromkeys(tasks))
    return dict(zip(distinct, embed_tasks(embedder, distinct)))


def _spool_batch(spool: IO[bytes], batch: ReadBatch, vectors: Future[dict[str, list[float]]] | None) -> None:
    if vectors is not None:
        batch.vectors = vectors.result()
    try:
        pickle.dump(batch, spool, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as exc:
        raise StoreError(f"cannot write ingest's temporary copy of the input ({exc.strerror}); nothing was "
                         "stored") from None


def _spooled(spool: IO[bytes]) -> Iterator[ReadBatch]:
    """Yield the batches `_read_pass` wrote to the spool, in order."""
    while True:
        try:
            yield pickle.load(spool)  # this process wrote it, to a file only its owner can read
        except EOFError:
            return


def _ahead(items: Iterator[ReadBatch], depth: int = 2) -> Generator[ReadBatch, None, None]:
    """Yield `items` in order, the next `depth` of them taken on a thread meanwhile: a batch is unpickled while the
    one before is written (SQLite lets go of the GIL while it works), so the store pass keeps a second core busy."""
    with ThreadPoolExecutor(1, thread_name_prefix="memp-spool") as reader:
        pending: deque[Future[ReadBatch | None]] = deque(reader.submit(next, items, None) for _ in range(depth))
        while (item := pending.popleft().result()) is not None:
            pending.append(reader.submit(next, items, None))
            yield item


def _store_pass(
    store: Store,
    batches: Iterator[ReadBatch],
    keep: set[str] | None,
    embed_id: str,
    options: IngestOptions,
    on_progress: Progress | None,
    warn: Callable[[str], None] | None,
    report: IngestReport,
    redactor: boundary.Redactor | None,
) -> None:
    """Store the spooled runs, each batch one transaction, then contrast and index what was added.

    With the offline distiller, the next batch's records and vectors are made (on the side threads) while this one
    is written; with a model, each batch is written before the next is planned, as its calls go out.
    """
    scripts = LazyDistiller(options.model, warn, options.jobs) if options.build != "trajectory" else None
    embedder = get_embedder(None if is_default(embed_id) else embed_id)
    added: list[int] = []
    ahead: deque[tuple[Planned | None, int]] = deque()
    # A bulk write where the store has one (PostgreSQL: its HNSW index built once, at the end).
    bulk = getattr(store.vectors, "bulk", None)
    with Side() as side, (bulk() if bulk is not None else nullcontext()):
        # Batches run across files: many formats hold one trajectory per file, and embedding is cheaper in bulk.
        for batch in batches:
            size = len(batch.runs)
            if keep is not None:
                batch.runs = [p for p in batch.runs if p.trajectory.id in keep]
                report.dropped += size - len(batch.runs)
            ahead.append((plan_batch(store, batch, options.build, scripts, embedder, report, redactor, report.scope,
                                     side), size))
            # The distiller exists once a batch held a new run; a re-ingest that stores nothing never makes it
            # (nor warns about its model).
            lookahead = 0 if scripts is not None and scripts.distiller is not None and scripts.distiller.online else 1
            while len(ahead) > lookahead:
                _write_next(store, ahead, scripts, embed_id, report, redactor, side, added, on_progress)
        while ahead:
            _write_next(store, ahead, scripts, embed_id, report, redactor, side, added, on_progress)
    if scripts is not None:
        report.held += scripts.finish(store, redactor)
    if scripts and scripts.distiller:
        report.offline_scripts = scripts.distiller.fallbacks
        report.model = scripts.distiller.model_name if scripts.distiller.online else None
    if scripts is not None and added:
        report.contrasted = contrast(store, added, scripts, redactor)
    if added:
        index_procedures(store, embedder, embed_id)


def _write_next(
    store: Store, ahead: deque[tuple[Planned | None, int]], scripts: LazyDistiller | None, embed_id: str,
    report: IngestReport, redactor: boundary.Redactor | None, side: Side, added: list[int],
    on_progress: Progress | None,
) -> None:
    """Write the oldest planned batch, adding its memory ids to `added`."""
    planned, size = ahead.popleft()
    if planned is not None:
        added.extend(write_batch(store, planned, scripts, embed_id, report, redactor, report.scope, side))
    if on_progress:
        on_progress(size)


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
