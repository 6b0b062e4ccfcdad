"""The procedure index: each active memory's procedure key, its vector and what recall needs of its run.

Derived from the store and kept in a side file beside it (`<store>-procedures.npz`, readable by its owner only, as
the store is; its format: procedure_index_file.py), brought up to date when the store's memories change: new ones are
read and embedded, gone ones dropped (procedure_index_build.py, in bounded memory). In the store's schema it would be
one more vector per memory, its argument words and action verbs, written at ingest.

It scales with the store: a fresh process maps the file's arrays (an uncompressed .npz, each member read in place)
and reads only the entries a recall touches; a key's cosine is computed once per distinct key, not per memory; and
memories added since the file was written are appended to it (their runs read and their new keys embedded), while a
change of status (retire, approve, purge) copies the rows of memories still there and reads only the others.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MempError
from .procedure_index_file import INDEX_VERSION, OLDER_VERSIONS, index_path, mapped_npz, read_meta, saved_key_texts

if TYPE_CHECKING:
    from .embed import Embedder
    from .store import Store

__all__ = ["COPY_STEPS", "COPY_TASK", "SAME_TASK", "Entry", "ProcedureIndex", "index_for", "index_path"]

# Near-copies: the same outcome and the same task (cosine SAME_TASK), or a task at least COPY_TASK alike with procedure
# keys as close and the runs' verbs alike by at least COPY_STEPS: the Jaccard of the two sets of action verbs,
# each weighted by its inverse document frequency in the store, since runs of one task differ in common steps such
# as "go" or "open" while rare ones ("heat", "cool") tell procedures apart.
COPY_TASK = 0.95
SAME_TASK = 0.99
COPY_STEPS = 0.5


@dataclass
class Entry:
    """What the index keeps of one active memory."""

    trajectory_id: str
    outcome: str
    task_words: frozenset[str]
    args: frozenset[str]
    verbs: frozenset[str]
    key: int  # row of its key's vector
    key_words: frozenset[str]
    scope: str = "default"


def _idf(df: dict[str, int], n: int) -> dict[str, float]:
    """Return each word's inverse document frequency over `n` memories, from its document frequency."""
    return {word: math.log((1 + n) / count) for word, count in df.items()}


class ProcedureIndex:
    """Procedure keys of a store's active memories, their vectors, and what query masking and collapsing need.

    Entries are kept as one UTF-8 blob with offsets and decoded one at a time when a recall needs them (its
    neighbours and candidates), so that loading the index costs a read, not a parse of every memory.
    """

    def __init__(self, state: tuple[Any, ...] = (), ids: Any = None, key_of: Any = None, key_vectors: Any = None,
                 blob: Any = None, offsets: Any = None, df: dict[str, int] | None = None,
                 word_df: dict[str, int] | None = None, key_texts: list[str] | None = None,
                 key_rows: Any = None, key_starts: Any = None, scope_names: list[str] | None = None,
                 scope_of: Any = None, tids: Any = None) -> None:
        import numpy as np

        self.state = state
        self.ids = ids if ids is not None else np.zeros(0, dtype=np.int64)  # sorted
        self.key_of = key_of if key_of is not None else np.zeros(0, dtype=np.int64)
        self.key_vectors = key_vectors if key_vectors is not None else np.zeros((0, 0), dtype=np.float32)
        self._blob = blob if blob is not None else np.zeros(0, dtype=np.uint8)
        self._offsets = offsets if offsets is not None else np.zeros(1, dtype=np.int64)
        # Each key's rows, grouped: rows of key k are key_rows[key_starts[k]:key_starts[k + 1]], in row order.
        self._key_rows, self._key_starts = key_rows, key_starts
        self.df, self.word_df = df or {}, word_df or {}
        self.idf, self.word_idf = _idf(self.df, len(self.ids)), _idf(self.word_df, len(self.ids))
        self._key_texts = key_texts
        # Each indexed memory's scope, as a position in `scope_names`: candidates are kept to the scopes asked for.
        self.scope_names = scope_names or []
        self.scope_of = scope_of if scope_of is not None else np.zeros(0, dtype=np.int32)
        # A hash of each row's trajectory id (procedure_index_file.tid_hash); zeros match none, so are read again.
        self.tids = tids if tids is not None else np.zeros(len(self.ids), dtype=np.uint64)
        self._path: Path | None = None
        self._save = ""
        self._decoded: dict[int, Entry] = {}

    def entry(self, memory_id: int) -> Entry | None:
        """Return what the index keeps of a memory, or None when it is not indexed."""
        if memory_id in self._decoded:
            return self._decoded[memory_id]
        row = int(self.ids.searchsorted(memory_id))
        if row >= len(self.ids) or int(self.ids[row]) != memory_id:
            return None
        raw = self._blob[int(self._offsets[row]) : int(self._offsets[row + 1])].tobytes().decode("utf-8")
        trajectory_id, outcome, task_words_, args, verbs_, key_words_, scope = raw.split("\t")
        entry = Entry(trajectory_id, outcome, frozenset(task_words_.split()), frozenset(args.split()),
                      frozenset(verbs_.split()), int(self.key_of[row]), frozenset(key_words_.split()), scope)
        self._decoded[memory_id] = entry
        return entry

    def in_scopes(self, scopes: Iterable[str] | None) -> Any:
        """Return a boolean per indexed memory (as `self.ids`): True when it is of `scopes` (None: every scope)."""
        import numpy as np

        if scopes is None:
            return np.ones(len(self.ids), dtype=bool)
        wanted = [n for n, name in enumerate(self.scope_names) if name in set(scopes)]
        return np.isin(self.scope_of, wanted)

    def near_copies(self, a: Entry, b: Entry, task_cosine: float) -> bool:
        """Return True when two memories are near-copies: alike tasks, outcomes, keys and (rarer) steps, one scope."""
        # Two scopes' memories stay apart in a recall of both, as prune keeps them apart.
        if task_cosine < COPY_TASK or a.outcome != b.outcome or a.scope != b.scope:
            return False
        if task_cosine >= SAME_TASK:
            return True  # the same task: its runs differ in how they explored, and in what they took for parameters
        if float(self.key_vectors[a.key] @ self.key_vectors[b.key]) < COPY_TASK:
            return False
        union = sum(self.idf.get(v, 0.0) for v in a.verbs | b.verbs)
        return union == 0 or sum(self.idf.get(v, 0.0) for v in a.verbs & b.verbs) / union >= COPY_STEPS

    def refresh(self, source: Store, embedder: Embedder, state: tuple[Any, ...],
                key_texts: list[str] | None = None, path: Path | None = None) -> None:
        """Bring the index in line with the store's active memories (new ones read and embedded, gone ones dropped),
        written to `path` (or a temporary file) and mapped from there."""
        from . import procedure_index_build as build

        known = list(key_texts if key_texts is not None else self._key_texts or [])
        vectors = self.key_vectors[: len(known)] if len(known) else self.key_vectors[:0]
        # Written beside its place, then renamed into it; where that folder is read-only, to a temporary file only.
        folder = path.parent if path is not None and os.access(path.parent, os.W_OK) else Path(tempfile.gettempdir())
        tmp = folder / f"{path.name if path is not None else 'procedures.npz'}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        old = self if len(self.ids) or self.df else None
        extendable = old is not None and self._extends(source, state)
        writer = build.Writer(folder, embedder, known, vectors, old)
        # state ends with (active memories, largest memory id): see index_for.
        if not (extendable and build.extend(writer, source, self, int(state[-2]))):
            if extendable:  # the extension gave up part way: start from the known keys again
                writer.close()
                writer = build.Writer(folder, embedder, known, vectors, old)
            self._rebuild(writer, source, old)
        try:
            save = writer.finish(tmp, state)
            fresh = ProcedureIndex.load(tmp)
            if fresh is None:
                raise OSError(f"{tmp}: the index just written does not read back")
            if path is not None and folder == path.parent:
                os.replace(tmp, path)
                fresh._path, fresh._save = path, save
            else:
                fresh._path = None
        finally:
            if tmp.exists():
                tmp.unlink()
        fresh._key_texts = list(writer.texts)
        self.__dict__.update(fresh.__dict__)

    @staticmethod
    def _rebuild(writer: Any, source: Store, old: ProcedureIndex | None) -> None:
        """Index every active memory again, copying the rows of those the old index holds as they are."""
        from .procedure_index_build import rebuild

        rebuild(writer, source, old)

    def _extends(self, source: Store, state: tuple[Any, ...]) -> bool:
        """Return True when the store may only have added memories since the index was made (checked after)."""
        if not self.state or len(self.state) != len(state) or self.state[:2] != state[:2] or not len(self.ids):
            return False
        last = int(self.ids[-1])
        kept = self.entry(last)
        try:
            # The newest indexed memory still there as it was (an id is reused when the newest is purged).
            return kept is not None and source.memories.get(last).trajectory_id == kept.trajectory_id
        except MempError:
            return False

    def _regroup(self) -> None:
        """Recompute each key's rows (for an index made in memory, not loaded)."""
        import numpy as np

        self._key_rows = np.argsort(self.key_of, kind="stable")
        self._key_starts = np.searchsorted(self.key_of[self._key_rows], np.arange(len(self.key_vectors) + 1))

    def word_overlap(self, query_words: frozenset[str], entry: Entry | None) -> float:
        """Return the IDF-weighted Jaccard of a query key's words and a memory key's (0 when either has none)."""
        if entry is None or not query_words or not entry.key_words:
            return 0.0
        unseen = math.log(2 + len(self.ids))  # a word no memory's key has weighs as the rarest
        union = sum(self.word_idf.get(w, unseen) for w in query_words | entry.key_words)
        return sum(self.word_idf.get(w, unseen) for w in query_words & entry.key_words) / union

    def key_cosines(self, query_keys: Any) -> Any:
        """Return the cosine of each query key to each distinct memory key: (queries, keys); row r has key_of[r]."""
        import numpy as np

        if not len(self.ids):
            return np.zeros((len(query_keys), 0), dtype=np.float32)
        return np.asarray(query_keys, dtype=np.float32) @ self.key_vectors.T

    def key_candidates(self, cosines: Any, n: int, keep: Any = None) -> list[int]:
        """Return up to `n` rows whose keys are nearest by `cosines` (one query's row of key_cosines), best first.

        `keep` (a boolean per row, as `in_scopes` gives) leaves out the other rows.
        """
        import numpy as np

        if keep is not None:
            # Only the rows kept are ordered (a small scope of a big store sorts its own rows, not every key's):
            # by key cosine, then key, then row, the order the grouped walk below gives.
            rows = np.flatnonzero(keep)
            keys = self.key_of[rows]
            return [int(r) for r in rows[np.lexsort((rows, keys, -cosines[keys]))[:n]]]
        if self._key_rows is None or self._key_starts is None:
            self._regroup()
        out: list[int] = []
        for key in np.argsort(-cosines, kind="stable"):
            start, end = int(self._key_starts[key]), int(self._key_starts[key + 1])
            out.extend(int(r) for r in self._key_rows[start : min(end, start + n - len(out))])
            if len(out) >= n:
                break
        return out

    def save(self, path: Path) -> None:
        """Write the index to one file, atomically (concurrent recalls each write their own; the last one wins)."""
        from .procedure_index_file import write_index

        if self._key_rows is None or self._key_starts is None:
            self._regroup()
        meta = {"version": INDEX_VERSION, "state": list(self.state), "df": self.df, "word_df": self.word_df,
                "scopes": self.scope_names, "save": os.urandom(8).hex()}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        write_index(tmp, meta, {"ids": self.ids, "key_of": self.key_of, "vectors": self.key_vectors,
                                "blob": self._blob, "offsets": self._offsets, "key_rows": self._key_rows,
                                "key_starts": self._key_starts, "scope_of": self.scope_of, "tids": self.tids},
                    self._key_texts or [])
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ProcedureIndex | None:
        """Return the index saved at `path` (mapped; its key texts left unread), or None when missing, unreadable,
        torn or stale."""
        import json

        import numpy as np

        try:
            data = mapped_npz(path)
            meta = read_meta(data)
            if meta.get("version") in OLDER_VERSIONS:
                # Only the store's file and model (the state's first two) and the keys are kept: the entries are
                # read again from the store, and the keys already embedded are not embedded again.
                texts = json.loads(data["keys"].tobytes())[: len(data["vectors"])]
                return cls(tuple(meta["state"][:2]), key_vectors=np.array(data["vectors"]), key_texts=texts)
            if meta.get("version") != INDEX_VERSION:
                return None
            # A torn file fails to map (its central directory or a member cut short); these hold for every save.
            if int(data["offsets"][-1]) > len(data["blob"]) or len(data["key_starts"]) != len(data["vectors"]) + 1:
                raise ValueError("members that do not fit together")
            index = cls(tuple(meta["state"]), data["ids"], data["key_of"], data["vectors"], data["blob"],
                        data["offsets"], meta["df"], meta["word_df"], None, data["key_rows"], data["key_starts"],
                        meta["scopes"], data["scope_of"], data["tids"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError, struct.error):
            return None
        index._path, index._save = path, str(meta.get("save", ""))
        return index

    def key_texts(self) -> list[str] | None:
        """Return the key texts (read from the saved file on first use: only refreshing needs them).

        None when another process has saved the file anew since this index was loaded from it: its texts would not
        match this index's key vectors.
        """
        if self._key_texts is None:
            if self._path is None:
                self._key_texts = []
                return self._key_texts
            texts = saved_key_texts(self._path, self._save)
            if texts is None or len(texts) != len(self.key_vectors):
                return None
            self._key_texts = texts
        return self._key_texts


_indexes: dict[tuple[str, str], ProcedureIndex] = {}


def index_for(store: Store, embedder: Embedder, embed_id: str) -> ProcedureIndex:
    """Return the store's procedure index: held per process, kept beside the store, updated when the store changed."""
    try:
        inode = os.stat(store.path).st_ino
    except OSError:
        inode = 0
    # Keyed by the store file's inode too, so a side file left by a deleted store of the same name is never trusted.
    state = (inode, embed_id, *store.keywords.state())
    key = (str(store.path), embed_id)
    index = _indexes.get(key)
    if index is not None and index.state == state:
        return index
    path = index_path(store)
    if index is None:
        loaded = ProcedureIndex.load(path)
        index = loaded if loaded is not None and loaded.state[:2] == state[:2] else ProcedureIndex()
    if index.state != state:
        texts = index.key_texts()
        if texts is None:  # the side file changed under it (a concurrent recall saved its own): start afresh
            index = ProcedureIndex()
        # Written beside the store and renamed into place; a read-only folder only costs the next process the rebuild.
        try:
            index.refresh(store, embedder, state, texts, path)
        except OSError:  # writable but failing there (a full disk): this process's own copy, in the temporary folder
            index.refresh(store, embedder, state, texts)
    _indexes[key] = index
    return index


