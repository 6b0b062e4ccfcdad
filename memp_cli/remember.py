"""Checked runs -> memories: batches past the boundary, scripts (cached, offline, a model's as they arrive), task
vectors, contrast with failed attempts, the procedure index; and rebuilding scripts with a model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from . import boundary
from .boundary import build_memory
from .distill import Distiller, offline_script
from .distill_pool import LazyDistiller
from .distill_pool import Waiting as _Waiting
from .embed import Embedder, get_embedder, is_default, resolve_embed_model
from .errors import MempError
from .ingest_records import IngestOptions, IngestReport
from .pool import CallPool, resolve_jobs
from .records import Script, Trajectory
from .scopes import write_scope
from .store import NewMemory, Store

if TYPE_CHECKING:
    from typing_extensions import Self

# Each batch is one short write transaction: a kill loses at most the batch in flight, and a re-run redoes it.
BATCH = 64


T = TypeVar("T")


def batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """Yield lists of up to `size` items."""
    while batch := list(islice(items, size)):
        yield batch


def redactor_for(options: IngestOptions) -> boundary.Redactor | None:
    """Return the redactor the options ask for: the built-in rules and --redact patterns, or None for --no-redact."""
    return boundary.Redactor(options.redact_patterns) if options.redact else None


def store_trajectories(
    store: Store, runs: Sequence[Trajectory], options: IngestOptions, warn: Callable[[str], None] | None = None
) -> list[int]:
    """Store already-read trajectories as memories (as ingest's second pass does); return the new memory ids."""
    embed_id = resolve_embed_model(store, options.embed_model)
    embedder = get_embedder(None if is_default(embed_id) else embed_id)
    scripts = LazyDistiller(options.model, warn, options.jobs) if options.build != "trajectory" else None
    redactor = redactor_for(options)
    report = IngestReport()
    scope = write_scope(options.scope)
    ids: list[int] = []
    with Side() as side:
        for batch in batches(iter(runs), BATCH):
            # Every path into the store passes the boundary: here, as ingest's read pass does.
            prepared = ReadBatch([boundary.prepare(t, redactor) for t in batch])
            ids.extend(store_batch(store, prepared, options.build, scripts, embedder, embed_id, report, redactor,
                                   scope, side))
    if scripts is not None:
        scripts.finish(store, redactor)
    if scripts is not None and ids:
        contrast(store, ids, scripts, redactor)
    if ids:
        index_procedures(store, embedder, embed_id)
    return ids


def index_procedures(store: Store, embedder: Embedder, embed_id: str) -> None:
    """Bring the procedure index (the default recall policy's) up to date now, so the next recall does not wait."""
    from .procedure_index import index_for

    index_for(store, embedder, embed_id)


def contrast(store: Store, added: Sequence[int], scripts: LazyDistiller, redactor: boundary.Redactor | None) -> int:
    """Let successes whose task also has failed runs say what they did differently; return how many changed."""
    from .attempts import contrast_groups

    return contrast_groups(store, added, scripts.get(), redactor, scripts.warn, resolve_jobs(scripts.jobs))


# Task vectors kept per embedder: the embedded model gives a text the same vector wherever it is embedded, and runs
# of one task (ALFWorld's trials, retries) share its text, so each task is embedded once. Bounded, oldest dropped.
_VECTOR_CACHE = 4096
_vectors: dict[str, OrderedDict[str, list[float]]] = {}


def embed_tasks(
    embedder: Embedder, tasks: Sequence[str], computed: dict[str, list[float]] | None = None
) -> list[list[float]]:
    """Return a vector per task, embedding each distinct text not seen lately once (`computed`: vectors of this
    embedder made earlier, by ingest's read pass)."""
    cache = _vectors.setdefault(embedder.model_id, OrderedDict())
    cache.update(computed or {})
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


class Side:
    """The threads a store pass works on beside its own: one embeds (onnxruntime, off the GIL), one makes records
    (tiktoken's counts, off the GIL too)."""

    def __init__(self) -> None:
        self.embed = ThreadPoolExecutor(1, thread_name_prefix="memp-embed")
        self.records = ThreadPoolExecutor(1, thread_name_prefix="memp-records")
        # Runs planned in a batch not written yet: a later batch holding one again skips it, as if stored.
        self.planned: set[str] = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.embed.shutdown(wait=True, cancel_futures=True)
        self.records.shutdown(wait=True, cancel_futures=True)


@dataclass
class ReadBatch:
    """Runs past the boundary, as ingest's read pass spools them: with the records the workers made for new runs
    (by trajectory id; their vectors still to come) and vectors of their tasks made meanwhile (by task text)."""

    runs: list[boundary.Prepared]
    made: dict[str, NewMemory] = field(default_factory=dict)
    vectors: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Planned:
    """A batch whose records and vectors are being made: what `write_batch` stores."""

    runs: list[boundary.Prepared]
    waiting: dict[str, _Waiting]
    later: list[_Waiting]
    records: list[Any]
    vectors: Any


def plan_batch(
    store: Store,
    batch: ReadBatch,
    build: str,
    scripts: LazyDistiller | None,
    embedder: Embedder,
    report: IngestReport,
    redactor: boundary.Redactor | None,
    scope: str,
    side: Side,
) -> Planned | None:
    """Start making the records and vectors of the batch's new runs (None when it has none); skipped ones counted.

    With a model, its first calls go out now, so the pool is busy while the batch is written.
    """
    known = store.memories.scopes_of([p.trajectory.id for p in batch.runs])
    fresh: dict[str, boundary.Prepared] = {}
    for run in batch.runs:
        tid = run.trajectory.id
        if tid in known or tid in fresh or tid in side.planned:
            report.skipped += 1
            # A run is stored once (its id is a hash of it): not copied into a second scope, but said so.
            elsewhere = known.get(tid, scope)
            if elsewhere != scope:
                report.other_scopes[elsewhere] = report.other_scopes.get(elsewhere, 0) + 1
        else:
            fresh[tid] = run
    if not fresh:
        return None
    runs = list(fresh.values())
    side.planned.update(fresh)
    plans = [scripts.cached(store, run.trajectory) if scripts is not None else (None, False) for run in runs]
    waiting = {run.trajectory.id: _Waiting(run.trajectory, build) for run, (_, ask) in zip(runs, plans) if ask}
    later = scripts.ask(store, list(waiting.values()), redactor, wait=False) if scripts is not None else []
    if scripts is not None:
        # The offline script each run is stored with now (kept, or replaced when the model answers).
        scripts.get().fallbacks += sum(1 for cached, ask in plans if cached is None and not ask)
    try:
        vectors = side.embed.submit(embed_tasks, embedder, [p.trajectory.task for p in runs], batch.vectors)
        records: list[Any] = []
        for run, (cached, _) in zip(runs, plans):
            made = batch.made.get(run.trajectory.id)
            if made is not None and made.trajectory is run.trajectory and cached is None:
                records.append(made)  # made by a worker from this very run (not a judged copy), as below
                continue
            # The offline distiller's Python here, the record (its token count) on the side thread meanwhile.
            script = cached or (offline_script(run.trajectory) if scripts is not None else None)
            records.append(side.records.submit(boundary.new_memory, run, build, script, [], redactor))
    except BaseException:
        if scripts is not None:
            scripts.close()  # nothing of this batch is stored: the calls sent for it are not waited for
        raise
    return Planned(runs, waiting, later, records, vectors)


def write_batch(
    store: Store,
    planned: Planned,
    scripts: LazyDistiller | None,
    embed_id: str,
    report: IngestReport,
    redactor: boundary.Redactor | None,
    scope: str,
    side: Side,
) -> list[int]:
    """Store a planned batch in one transaction (runs stored meanwhile by another process skipped); return the new
    memory ids."""
    try:
        records = [r if isinstance(r, NewMemory) else r.result() for r in planned.records]
        items = [replace(item, vector=vector, scope=scope) for item, vector in zip(records, planned.vectors.result())]
        added = store.memories.add(items, embed_id)
    except BaseException:
        if scripts is not None:
            scripts.close()
        raise
    finally:
        side.planned.difference_update(p.trajectory.id for p in planned.runs)
    report.added += len(added)
    report.skipped += len(items) - len(added)
    for item in items:
        if item.trajectory.id in added:
            report.held += bool(item.flag)
            outcome = str(item.trajectory.outcome)
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        if (wait := planned.waiting.get(item.trajectory.id)) is not None:
            wait.dropped = item.trajectory.id not in added
            wait.memory_id = added.get(item.trajectory.id)
            wait.pending, wait.flag = (item.script.text if item.script else None), item.flag
    if scripts is not None:
        scripts.stored(store, redactor)
        scripts.ask(store, planned.later, redactor)
    return list(added.values())


def store_batch(
    store: Store,
    batch: ReadBatch,
    build: str,
    scripts: LazyDistiller | None,
    embedder: Embedder,
    embed_id: str,
    report: IngestReport,
    redactor: boundary.Redactor | None,
    scope: str,
    side: Side,
) -> list[int]:
    """Store the new runs of a batch (past the boundary: `boundary.prepare`'s) in `scope`, in one transaction;
    return their memory ids.

    With a model, the memories are stored with offline scripts first and the model's arrive after (LazyDistiller).
    """
    planned = plan_batch(store, batch, build, scripts, embedder, report, redactor, scope, side)
    if planned is None:
        return []
    return write_batch(store, planned, scripts, embed_id, report, redactor, scope, side)


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
    # Each memory's version when it was picked: one revised while the model was asked keeps its revision.
    picked: dict[int, int] = {}

    def finish(memory_id: int, traj: Trajectory, build: str, script: Script | None) -> None:
        if script is None:
            counts["failed"] += 1  # the model failed on this one; the offline script stays until the next build
            return
        script, held = boundary.check_script(script, boundary.Redactor())
        _, tokens = build_memory(traj, build, script)
        if store.memories.set_script(memory_id, traj.id, script, tokens, held, expected_version=picked.get(memory_id)):
            counts["rebuilt"] += 1
            counts["held"] += bool(held)

    with CallPool[tuple[int, Trajectory, str], Script | None](resolve_jobs(jobs)) as pool:
        for memory_id, trajectory_id, build in store.memories.scripts_to_rebuild(everything):
            traj = store.memories.trajectory(trajectory_id)
            picked[memory_id] = store.memories.get(memory_id).version
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
