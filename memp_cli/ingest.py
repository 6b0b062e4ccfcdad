"""Trajectory files -> stored trajectories, memories built under a build policy, and task vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from . import formats
from .distill import Distiller
from .embed import DEFAULT_EMBED_MODEL, get_embedder, is_default, resolve_embed_model
from .errors import MempError
from .records import BUILD_POLICIES, OUTCOMES, Script, Trajectory, render_memory
from .store import NewMemory, Store
from .tokens import count_tokens

# Each batch is one short write transaction: a kill loses at most the batch in flight, and a re-run redoes it.
BATCH = 64

Progress = Callable[[int], None]


@dataclass
class IngestReport:
    """What an ingest did."""

    files: int = 0
    read: int = 0
    added: int = 0
    skipped: int = 0
    offline_scripts: int = 0
    model: str | None = None
    embed_model: str = DEFAULT_EMBED_MODEL

    def to_dict(self) -> dict[str, object]:
        """Return the report as a JSON-ready dict."""
        return {
            "files": self.files,
            "read": self.read,
            "added": self.added,
            "skipped": self.skipped,
            "offline_scripts": self.offline_scripts,
            "model": self.model,
            "embed_model": self.embed_model,
        }


def _batches(items: Iterator[Trajectory], size: int) -> Iterator[list[Trajectory]]:
    while batch := list(islice(items, size)):
        yield batch


def build_memory(traj: Trajectory, policy: str, script: Script | None) -> tuple[str | None, int]:
    """Return the trajectory text the memory keeps under `policy`, and the memory's token count."""
    text = traj.render() if policy in ("trajectory", "proceduralization") else None
    return text, count_tokens(render_memory(script.text if script else None, text))


def ingest(
    store: Store,
    paths: Sequence[str],
    build: str = "proceduralization",
    model: str | None = None,
    embed_model: str | None = None,
    fmt: str = "auto",
    outcome: str = "success",
    on_total: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> IngestReport:
    """Read every source whole first (so a bad line stores nothing), then store new trajectories in batches."""
    if build not in BUILD_POLICIES:
        raise MempError(f"unknown build policy {build!r}; choose one of {', '.join(BUILD_POLICIES)}")
    if outcome not in OUTCOMES:
        raise MempError(f"--outcome must be one of {', '.join(OUTCOMES)}")
    formats.check_format(fmt)
    report = IngestReport()
    embed_id = resolve_embed_model(store, embed_model)
    report.embed_model = embed_id
    with formats.sources(paths) as found:
        report.files = len(found)
        total = sum(sum(1 for _ in formats.read(src, fmt, outcome)) for src in found)
        report.read = total
        if on_total:
            on_total(total)
        if total == 0:
            return report
        scripts = _LazyDistiller(model, warn) if build != "trajectory" else None
        embedder = get_embedder(None if is_default(embed_id) else embed_id)
        # Batches run across files: many formats hold one trajectory per file, and embedding is cheaper in bulk.
        stream = (t for src in found for t in formats.read(src, fmt, outcome))
        for batch in _batches(stream, BATCH):
            _store_batch(store, batch, build, scripts, embedder, embed_id, report)
            if on_progress:
                on_progress(len(batch))
        if scripts and scripts.distiller:
            report.offline_scripts = scripts.distiller.fallbacks
            report.model = scripts.distiller.model_name if scripts.distiller.online else None
    return report


def script_for(store: Store, distiller: Distiller, traj: Trajectory) -> Script:
    """Return the script cached for this trajectory, model and prompt version, else a newly distilled one."""
    return store.cached_script(traj.id, distiller.model_name, distiller.version) or distiller.distill(traj)


class _LazyDistiller:
    """Resolves the chat model only when a new trajectory needs a script, so a no-op re-ingest stays quiet."""

    def __init__(self, model: str | None, warn: Callable[[str], None] | None) -> None:
        self.model, self.warn = model, warn
        self.distiller: Distiller | None = None

    def script(self, store: Store, traj: Trajectory) -> Script:
        """Return the cached script for `traj` under the current model, else a freshly distilled one."""
        if self.distiller is None:
            self.distiller = Distiller(self.model, warn=self.warn)
        return script_for(store, self.distiller, traj)


def _store_batch(
    store: Store,
    batch: list[Trajectory],
    build: str,
    scripts: _LazyDistiller | None,
    embedder: object,
    embed_id: str,
    report: IngestReport,
) -> None:
    known = store.known_trajectories([t.id for t in batch])
    fresh: dict[str, Trajectory] = {}
    for traj in batch:
        if traj.id in known or traj.id in fresh:
            report.skipped += 1
        else:
            fresh[traj.id] = traj
    if not fresh:
        return
    items = []
    vectors = embedder.embed([t.task for t in fresh.values()])  # type: ignore[attr-defined]
    for traj, vector in zip(fresh.values(), vectors):
        script = scripts.script(store, traj) if scripts is not None else None
        text, tokens = build_memory(traj, build, script)
        items.append(NewMemory(traj, build, script, text, tokens, vector))
    added = store.add_memories(items, embed_id)
    report.added += len(added)
    report.skipped += len(items) - len(added)


def rebuild_scripts(
    store: Store,
    model: str | None = None,
    everything: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Redo scripts with a model (offline-built ones, or all); return counts. Each memory is its own transaction."""
    distiller = Distiller(model, warn=warn)
    if not distiller.online:
        raise MempError(
            f"no usable model to build scripts with ({distiller.model_name}); pass -m/--model or set a key with "
            "`llm keys set`"
        )
    rebuilt = failed = 0
    for memory_id, trajectory_id, kind in store.scripts_to_rebuild(everything):
        traj = store.trajectory(trajectory_id)
        script = script_for(store, distiller, traj)
        if script.model != distiller.model_name:
            failed += 1  # the model failed on this one; the offline script stays until the next build
            continue
        text, tokens = build_memory(traj, kind, script)
        store.set_script(memory_id, trajectory_id, script, tokens)
        rebuilt += 1
    return {"model": distiller.model_name, "rebuilt": rebuilt, "failed": failed}
