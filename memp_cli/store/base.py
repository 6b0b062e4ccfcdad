"""The storage seam: what each part of a store offers, whatever database holds it.

recall, update, prune, ingest and the CLI use only these interfaces; the SQLite modules beside this one implement
them, and another backend (PostgreSQL with pgvector) implements the same parts to run the same commands.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..records import Memory, Script, Trajectory

# One recall to log: (recall id, task, policy, k, [(memory id, score), ...] in rank order).
RecallEntry = tuple[str, str, str, int, Sequence[tuple[int, float]]]


@dataclass
class NewMemory:
    """What ingest hands the store for one trajectory: the memory built, the key vector, and the scope it goes in."""

    trajectory: Trajectory
    build: str
    script: Script | None
    trajectory_text: str | None
    tokens: int
    vector: list[float]
    flag: str | None = None
    scope: str = "default"


class Settings(Protocol):
    """Store settings, and which embedding model built the store's vectors."""

    def get(self, key: str) -> str | None:
        """Return a store setting, None when unset."""

    def set(self, key: str, value: str) -> None:
        """Store a setting."""

    def embed_model(self) -> tuple[str, int] | None:
        """Return the (model id, dimensions) the store's vectors were built with, if any."""

    def check_embed_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise ModelMismatchError unless vectors from `model_id` (of `dim`) may go into this store."""

    def claim_embed_model(self, model_id: str, dim: int) -> None:
        """Record `model_id` as the store's embedding model unless one is recorded, else check it (inside a write)."""


class Vectors(Protocol):
    """The task vectors of the memories, one per memory, and the nearest-neighbour search over them."""

    def add(self, memory_ids: Sequence[int], vectors: Sequence[Sequence[float]], embed_model: str) -> None:
        """Store the memories' vectors (inside a write), recording which model made them."""

    def remove(self, memory_ids: Sequence[int]) -> None:
        """Delete the memories' vectors (inside a write)."""

    def count(self) -> int:
        """Return how many vectors the store holds."""

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector, or raise NotFoundError."""

    def nearest(
        self, vector: Sequence[float], k: int, exact: bool | None = None, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, cosine similarity) of the `k` active memories nearest to `vector`, best first.

        `scopes` None searches every scope; a sequence searches the memories of those scopes only.
        """

    def nearest_many(
        self, vectors: Sequence[Sequence[float]], k: int, scopes: Sequence[str] | None = None
    ) -> list[list[tuple[int, float]]]:
        """Return `nearest` for each vector, within `scopes` (None: every scope)."""

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the cosine between `vector` and each memory's task vector."""

    def preload(self) -> None:
        """Hold the active memories' vectors in memory, for many searches in one process."""


class Memories(Protocol):
    """Trajectories, the memories built from them, the script cache, and every change to a memory."""

    # Inside this class `list` names the method below: annotations say builtins.list.

    def known(self, trajectory_ids: Sequence[str]) -> set[str]:
        """Return which of the trajectory ids are stored already."""

    def scopes_of(self, trajectory_ids: Sequence[str]) -> dict[str, str]:
        """Return trajectory id -> the scope of its memory, for those of the ids stored already."""

    def cached_script(self, trajectory_id: str, model: str, prompt_version: str) -> Script | None:
        """Return a script distilled before from this trajectory by this model and prompt version."""

    def add(self, items: Sequence[NewMemory], embed_model: str) -> dict[str, int]:
        """Store trajectories with their memories and vectors in one transaction; return trajectory id -> memory id."""

    def attempts(self, tasks: Sequence[str]) -> builtins.list[Memory]:
        """Return the memories whose task is one of `tasks` (trimmed, lower-case), oldest first."""

    def get(self, memory_id: int) -> Memory:
        """Return one memory, or raise NotFoundError."""

    def get_many(self, memory_ids: Sequence[int]) -> builtins.list[Memory]:
        """Return the memories with these ids that exist, in the order asked."""

    def list(
        self, limit: int | None = None, build: str | None = None, outcome: str | None = None,
        status: str | None = None, offset: int = 0, scopes: Sequence[str] | None = None,
    ) -> builtins.list[Memory]:
        """Return memories, newest first, optionally filtered by build policy, outcome, status and scopes."""

    def random_ids(self, k: int, seed: int | None = None, scopes: Sequence[str] | None = None) -> builtins.list[int]:
        """Return the ids of up to `k` active memories of `scopes` (None: every scope) drawn at random."""

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """Return a stored trajectory, or raise NotFoundError."""

    def active_page(self, above: int, limit: int) -> builtins.list[tuple[int, str]]:
        """Return (memory id, trajectory id) of up to `limit` active memories with ids above `above`, by id."""

    def index_rows(self, memory_ids: Sequence[int]) -> builtins.list[tuple[int, str, str, str, str, str]]:
        """Return (id, trajectory id, task, outcome, scope, steps as JSON text) of these memories, by id."""

    def set_script(
        self, memory_id: int, trajectory_id: str, script: Script, tokens: int, flag: str | None = None,
        expected_version: int | None = None,
    ) -> bool:
        """Replace a memory's script (a rebuild) as a new version, caching the new one; False when refused.

        The same script adds no version (True: the memory holds it); with `expected_version`, a memory revised since
        it was picked is left as it is (False).
        """

    def finish_script(
        self, memory_id: int, trajectory_id: str, pending: str | None, script: Script, tokens: int,
        flag: str | None = None,
    ) -> None:
        """Put a model's script in place of the offline one stored while waiting for it (still version 1), else
        store it as a rebuild."""

    def revise(
        self, memory_id: int, script: str | None, trajectory: str | None, model: str | None,
        prompt_version: str | None, tokens: int, event: str, reason: str, flag: str | None = None,
        expected_version: int | None = None, outcome_id: int | None = None,
    ) -> int:
        """Store a new version of a memory (the old one stays in its history); return the version number.

        `expected_version`: compare-and-set, ConflictError when the memory is at another version. `outcome_id`: at
        most one revision per (memory, outcome); a second returns the first one's version.
        """

    def retire(self, memory_id: int, reason: str, merged_into: int | None = None) -> bool:
        """Keep an active memory out of recall (restorable); False when it was not active.

        A merge moves its counts into `merged_into`, which must be another active memory (else StoreError), with a
        ledger row; memories merged into this one before are merged on into `merged_into` (no chains, no cycles).
        """

    def restore(self, memory_id: int) -> None:
        """Bring a retired memory back into recall, taking back the counts a merge moved."""

    def approve(self, memory_id: int) -> str | None:
        """Let a held memory into recall; return the flag it was held for (None if it was not held)."""

    def purge_retired(self) -> int:
        """Delete retired memories for good, with everything that refers to them; return how many."""

    def history(self, memory_id: int) -> builtins.list[dict[str, Any]]:
        """Return every change to a memory, oldest first."""

    def version_content(self, memory_id: int, version: int) -> tuple[str | None, str | None, str | None]:
        """Return (script, trajectory, model) of a memory as it was at `version`."""

    def scripts_to_rebuild(self, everything: bool) -> builtins.list[tuple[int, str, str]]:
        """Return (memory id, trajectory id, build) of memories whose script is offline-built, or of all scripts."""

    def stats(self) -> dict[str, Any]:
        """Return counts of trajectories and memories by build policy, outcome, model and status.

        Its "scopes" maps each scope name to its count of active memories.
        """


class Log(Protocol):
    """The recalls made and the outcomes reported for them."""

    def record_recalls(self, recalls: Sequence[RecallEntry]) -> None:
        """Record recalls and the memories they returned, counting each memory's use, in one write."""

    def recall_memory_ids(self, recall_id: str) -> list[int]:
        """Return the memories a recall returned, in rank order, or raise NotFoundError."""

    def record_outcome(
        self, recall_id: str | None, memory_ids: Sequence[int], outcome: str, score: float | None, policy: str,
        trajectory_json: str | None, applied: bool,
    ) -> int:
        """Record an outcome and credit or blame each memory used, in one transaction; return the outcome id."""

    def pending_outcomes(self) -> list[dict[str, Any]]:
        """Return outcomes whose update policy has not been applied yet, oldest first."""

    def is_applied(self, outcome_id: int) -> bool:
        """Return whether an outcome's policy was carried out by any process (a missing outcome counts as applied)."""

    def mark_applied(self, outcome_id: int) -> bool:
        """Claim an outcome (inside the write applying it): mark it applied; False when it was marked already."""


class Keywords(Protocol):
    """AveFact's keywords (each once, with its vector, and which memory has which) and the full-text index."""

    def missing(self) -> list[tuple[int, str]]:
        """Return (memory id, task) of memories whose keywords were not extracted yet."""

    def reset(self) -> None:
        """Forget which memory has which keywords (another extractor will fill them in again)."""

    def known(self, words: Sequence[str]) -> set[str]:
        """Return which of `words` have a stored vector."""

    def add(self, vectors: dict[str, list[float]], links: Sequence[tuple[int, list[str]]]) -> None:
        """Store keyword vectors and which memory has which keywords, in one transaction."""

    def state(self) -> tuple[int, ...]:
        """Return numbers that change whenever keywords, memberships or memory statuses change."""

    def index(
        self, scopes: Sequence[str] | None = None
    ) -> tuple[list[int], list[list[int]], list[str], list[bytes]]:
        """Return active memory ids (of `scopes`), each one's keyword positions, and the keywords with their blobs."""

    def full_text(
        self, terms: Sequence[str], n: int, scopes: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Return (memory id, score, higher is better) of up to `n` active memories of `scopes` matching `terms`."""


class Transfer(Protocol):
    """Whole memories out of and into a store, named by trajectory id across stores (export and import)."""

    def settings(self) -> dict[str, str]:
        """Return the store's settings by name."""

    def memory_rows(
        self, status: str | None = None, outcome: str | None = None, build: str | None = None,
        task_type: str | None = None, since: str | None = None, vectors: bool = False,
        scopes: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield each memory (oldest first, filtered) with its scope, run, history, cached scripts, keywords, vector."""

    def keyword_vectors(self, words: Sequence[str]) -> dict[str, bytes]:
        """Return the stored float32 blob of each of `words` that has one."""

    def outcome_rows(self, trajectory_ids: set[str]) -> list[dict[str, Any]]:
        """Return the outcomes that credit any of these memories, naming memories by trajectory id."""

    def is_empty(self) -> bool:
        """Return True when the store holds no memory."""

    def add_records(
        self, memories: Sequence[dict[str, Any]], vectors: Sequence[Sequence[float]], embed_model: str,
        keyword_vectors: dict[str, bytes], outcomes: Sequence[dict[str, Any]], settings: dict[str, str],
    ) -> dict[str, int]:
        """Store whole memories with their vectors, keywords, outcomes and settings in one transaction; return counts.

        Each memory dict carries its "scope" ("default" when absent: exports made before scopes).
        """

    def snapshot(self, target: Path) -> None:
        """Write a consistent copy of the whole store to the new file `target`."""

    # Row by row, every table, ids kept: `memp migrate` between backends (store/copy.py).

    def table_rows(
        self, table: str, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[tuple[Any, ...]], list[Any] | None]:
        """Return up to `limit` rows of `table` after the key `after`, in key order, and the last one's key."""

    def copy_progress(self, source: str) -> dict[str, list[Any]]:
        """Return, by table, the key of the last row copied into this store from `source`."""

    def put_rows(
        self, table: str, rows: Sequence[Sequence[Any]], last: Sequence[Any], source: str,
        embed_model: tuple[str, int] | None,
    ) -> int:
        """Write rows of `table` not here yet and the copy's progress (`last`) in one transaction; return how many."""


class Store(Protocol):
    """An open memp store: its parts, one transaction around several writes, an integrity check."""

    @property
    def path(self) -> Path | str:
        """Return where the store is: its file, or the URL of its database (no password) and #schema."""

    @property
    def settings(self) -> Settings:
        """Return the settings part."""

    @property
    def vectors(self) -> Vectors:
        """Return the vector part."""

    @property
    def memories(self) -> Memories:
        """Return the memories part."""

    @property
    def log(self) -> Log:
        """Return the recall and outcome log part."""

    @property
    def keywords(self) -> Keywords:
        """Return the keywords and full-text part."""

    @property
    def transfer(self) -> Transfer:
        """Return the export and import part."""

    def write(self) -> AbstractContextManager[None]:
        """Return a context that runs its block as one write transaction (writes inside it join it)."""

    def check(self) -> dict[str, Any]:
        """Return integrity findings: {"ok": bool, "problems": [...], counts...}."""

    def close(self) -> None:
        """Close the store."""
