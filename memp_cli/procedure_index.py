"""The procedure index: each active memory's procedure key, its vector and what recall needs of its run.

Derived from the store and kept in a side file beside it (`<store>-procedures.npz`, readable by its owner only, as
the store is), brought up to date when the store's memories change: new ones are read and embedded, gone ones
dropped. In the store's schema it would be one more vector per memory, its argument words and action verbs,
written at ingest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procedural import arguments, key_words, memory_key, task_words, verbs

if TYPE_CHECKING:
    from .embed import Embedder
    from .store import Store

# Near-copies: the same outcome and the same task (cosine SAME_TASK), or a task at least COPY_TASK alike with procedure
# keys as close and the runs' verbs alike by at least COPY_STEPS: the Jaccard of the two sets of action verbs,
# each weighted by its inverse document frequency in the store, since runs of one task differ in common steps such
# as "go" or "open" while rare ones ("heat", "cool") tell procedures apart.
COPY_TASK = 0.95
SAME_TASK = 0.99
COPY_STEPS = 0.5
INDEX_VERSION = "8"
# Version 7 had no scopes: every memory it indexed was in 'default' (its store was from before scopes), so its keys
# are read as they are rather than embedded again (minutes at 100k memories).
UNSCOPED_VERSION = "7"


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


def _idf(sets: Iterable[frozenset[str]]) -> dict[str, float]:
    """Return each word's inverse document frequency over the sets (one per memory)."""
    df: dict[str, int] = {}
    n = 0
    for words_ in sets:
        n += 1
        for word in words_:
            df[word] = df.get(word, 0) + 1
    return {word: math.log((1 + n) / count) for word, count in df.items()}


class ProcedureIndex:
    """Procedure keys of a store's active memories, their vectors, and what query masking and collapsing need.

    Entries are kept as one UTF-8 blob with offsets and decoded one at a time when a recall needs them (its
    neighbours and candidates), so that loading the index costs a read, not a parse of every memory.
    """

    def __init__(self, state: tuple[Any, ...] = (), ids: Any = None, key_of: Any = None, key_vectors: Any = None,
                 blob: bytes = b"", offsets: Any = None, idf: dict[str, float] | None = None,
                 word_idf: dict[str, float] | None = None, key_texts: list[str] | None = None,
                 scope_names: list[str] | None = None, scope_of: Any = None) -> None:
        import numpy as np

        self.state = state
        self.ids = ids if ids is not None else np.zeros(0, dtype=np.int64)  # sorted
        self.key_of = key_of if key_of is not None else np.zeros(0, dtype=np.int64)
        self.key_vectors = key_vectors if key_vectors is not None else np.zeros((0, 0), dtype=np.float32)
        self._blob, self._offsets = blob, offsets if offsets is not None else np.zeros(1, dtype=np.int64)
        self.idf = idf or {}
        self.word_idf = word_idf or {}
        self._key_texts = key_texts
        # Each indexed memory's scope, as a position in `scope_names`: candidates are kept to the scopes asked for.
        self.scope_names = scope_names or []
        self.scope_of = scope_of if scope_of is not None else np.zeros(0, dtype=np.int32)
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
        raw = self._blob[int(self._offsets[row]) : int(self._offsets[row + 1])].decode("utf-8")
        trajectory_id, outcome, task_words_, args, verbs_, key_words_, *scoped = raw.split("\t")
        scope = scoped[0] if scoped else "default"
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
                key_texts: list[str] | None = None) -> None:
        """Bring the index in line with the store's active memories (new ones read and embedded, gone ones dropped)."""
        import numpy as np

        entries = {int(i): e for i in self.ids if (e := self.entry(int(i))) is not None}
        texts = {t: n for n, t in enumerate(key_texts if key_texts is not None else self._key_texts or [])}
        active = {m.id: m for m in source.memories.list(status="active")}
        entries = {i: e for i, e in entries.items() if i in active and e.trajectory_id == active[i].trajectory_id}
        added: list[str] = []
        for memory in active.values():
            if memory.id in entries:
                continue
            actions = [step.action for step in source.memories.trajectory(memory.trajectory_id).steps]
            args = arguments(actions)
            key = memory_key(memory.task, args)
            if key not in texts:
                texts[key] = len(texts)
                added.append(key)
            entries[memory.id] = Entry(
                memory.trajectory_id, memory.outcome, task_words(memory.task), args, verbs(actions), texts[key],
                key_words(key), memory.scope,
            )
        if added:
            vectors = np.asarray(embedder.embed(added), dtype=np.float32)
            self.key_vectors = vectors if not len(self.key_vectors) else np.vstack([self.key_vectors, vectors])
        self._key_texts = list(texts)
        self.state = state
        self.ids = np.array(sorted(entries), dtype=np.int64)
        self.key_of = np.array([entries[int(i)].key for i in self.ids], dtype=np.int64)
        self.scope_names = sorted({e.scope for e in entries.values()})
        number = {name: n for n, name in enumerate(self.scope_names)}
        self.scope_of = np.array([number[entries[int(i)].scope] for i in self.ids], dtype=np.int32)
        raws = [
            "\t".join(
                [e.trajectory_id, e.outcome, *(" ".join(ws) for ws in (e.task_words, e.args, e.verbs, e.key_words)),
                 e.scope]
            ).encode()
            for e in (entries[int(i)] for i in self.ids)
        ]
        self._blob = b"".join(raws)
        self._offsets = np.cumsum([0] + [len(r) for r in raws], dtype=np.int64)
        self._decoded = entries
        self.idf = _idf(e.verbs for e in entries.values())
        self.word_idf = _idf(e.key_words for e in entries.values())

    def word_overlap(self, query_words: frozenset[str], entry: Entry | None) -> float:
        """Return the IDF-weighted Jaccard of a query key's words and a memory key's (0 when either has none)."""
        if entry is None or not query_words or not entry.key_words:
            return 0.0
        unseen = math.log(2 + len(self.ids))  # a word no memory's key has weighs as the rarest
        union = sum(self.word_idf.get(w, unseen) for w in query_words | entry.key_words)
        return sum(self.word_idf.get(w, unseen) for w in query_words & entry.key_words) / union

    def key_cosines(self, query_keys: Any) -> Any:
        """Return the cosine of each query key to each memory's key: (queries, memories), columns as `self.ids`."""
        import numpy as np

        if not len(self.ids):
            return np.zeros((len(query_keys), 0), dtype=np.float32)
        return (np.asarray(query_keys, dtype=np.float32) @ self.key_vectors.T)[:, self.key_of]

    def save(self, path: Path) -> None:
        """Write the index to one file, atomically (concurrent recalls each write their own; the last one wins)."""
        import numpy as np

        # A random id of this save: key_texts() reads the keys later and must find the same save (inode numbers are
        # reused as concurrent recalls replace the file, so they cannot tell one save from another).
        meta = {"version": INDEX_VERSION, "state": list(self.state), "idf": self.idf, "word_idf": self.word_idf,
                "scopes": self.scope_names, "save": os.urandom(8).hex()}
        keys = json.dumps(self._key_texts or []).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        # Task words and arguments come from the store, which is readable by its owner only: so is this file.
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "wb") as f:
            np.savez(
                f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), ids=self.ids, key_of=self.key_of,
                vectors=self.key_vectors, blob=np.frombuffer(self._blob, dtype=np.uint8), offsets=self._offsets,
                scope_of=self.scope_of,
                keys=np.frombuffer(keys, dtype=np.uint8),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ProcedureIndex | None:
        """Return the index saved at `path` (its key texts left unread), or None when missing, unreadable or stale."""
        import numpy as np

        try:
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes())
                if meta.get("version") not in (INDEX_VERSION, UNSCOPED_VERSION):
                    return None
                unscoped = meta["version"] == UNSCOPED_VERSION
                scope_names = ["default"] if unscoped else meta["scopes"]
                scope_of = np.zeros(len(data["ids"]), dtype=np.int32) if unscoped else data["scope_of"]
                index = cls(tuple(meta["state"]), data["ids"], data["key_of"], data["vectors"],
                            data["blob"].tobytes(), data["offsets"], meta["idf"], meta["word_idf"],
                            scope_names=scope_names, scope_of=scope_of)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        index._path, index._save = path, str(meta.get("save", ""))
        return index

    def key_texts(self) -> list[str] | None:
        """Return the key texts (read from the saved file on first use: only refreshing needs them).

        None when another process has saved the file anew since this index was loaded from it: its texts would not
        match this index's key vectors.
        """
        if self._key_texts is None:
            import numpy as np

            if self._path is None:
                self._key_texts = []
                return self._key_texts
            try:
                with open(self._path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                    meta = json.loads(data["meta"].tobytes())
                    # Files saved before save ids carry none: the length check below is what they get.
                    if meta.get("save", "") != self._save:
                        return None
                    texts = json.loads(data["keys"].tobytes())
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                return None
            if len(texts) != len(self.key_vectors):
                return None
            self._key_texts = texts
        return self._key_texts


_indexes: dict[tuple[str, str], ProcedureIndex] = {}


def index_path(store: Store) -> Path:
    """Return the side file beside the store that keeps its procedure index (derived, rebuilt from the store)."""
    if "://" in str(store.path):
        # A database has no folder beside it: this machine's cache, named by its URL and schema. Its state (the
        # store's id and generation counter, see store/pg/migrations.py) says when the store changed.
        import hashlib

        from .embed import cache_dir

        name = hashlib.blake2b(str(store.path).encode(), digest_size=12).hexdigest()
        folder = cache_dir() / "procedures"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            pass  # saving fails quietly then, and only costs the next process the rebuild
        return folder / f"{name}-procedures.npz"
    path = Path(store.path)
    return path.with_name(path.name + "-procedures.npz")


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
        index.refresh(store, embedder, state, texts)
        try:
            index.save(path)
        except OSError:
            pass  # a read-only folder only costs the next process the rebuild
    _indexes[key] = index
    return index


