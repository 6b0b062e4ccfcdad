"""The procedure index: each active memory's procedure key, its vector and what recall needs of its run.

Derived from the store and kept in a side file beside it (`<store>-procedures.npz`, readable by its owner only, as
the store is), brought up to date when the store's memories change: new ones are read and embedded, gone ones
dropped. In the store's schema it would be one more vector per memory, its argument words and action verbs,
written at ingest.

It scales with the store: a fresh process maps the file's arrays (an uncompressed .npz, each member read in place)
and reads only the entries a recall touches; a key's cosine is computed once per distinct key, not per memory; and
memories added since the file was written are appended to it (their runs read and their new keys embedded), so only
a change of status (retire, approve, purge) makes the index read every active memory again.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MempError
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
INDEX_VERSION = "9"
# Files of these versions (7: before scopes; 8: read whole, before the mapped layout) lend their key texts and key
# vectors to the index built afresh from the store, so that its keys are not embedded again (minutes at 100k).
OLDER_VERSIONS = ("7", "8")


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


def _count(df: dict[str, int], sets: Iterable[frozenset[str]]) -> dict[str, int]:
    """Return the document frequencies `df` with the sets (one per memory) counted in."""
    for words_ in sets:
        for word in words_:
            df[word] = df.get(word, 0) + 1
    return df


def _idf(df: dict[str, int], n: int) -> dict[str, float]:
    """Return each word's inverse document frequency over `n` memories, from its document frequency."""
    return {word: math.log((1 + n) / count) for word, count in df.items()}


def _mapped_npz(path: Path) -> tuple[dict[str, Any], int]:
    """Return the arrays of an uncompressed .npz as read-only views of one memory map (nothing read up front), and
    the inode of the file mapped."""
    import mmap

    import numpy as np

    arrays: dict[str, Any] = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        inode = os.fstat(f.fileno()).st_ino
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("compressed member")
            f.seek(info.header_offset)
            local = f.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if fortran or dtype.hasobject:
                raise ValueError("unexpected array layout")
            count = int(np.prod(shape)) if shape else 1
            arrays[info.filename.removesuffix(".npy")] = np.frombuffer(
                mapped, dtype=dtype, count=count, offset=f.tell()).reshape(shape)
    return arrays, inode


class ProcedureIndex:
    """Procedure keys of a store's active memories, their vectors, and what query masking and collapsing need.

    Entries are kept as one UTF-8 blob with offsets and decoded one at a time when a recall needs them (its
    neighbours and candidates), so that loading the index costs a read, not a parse of every memory.
    """

    def __init__(self, state: tuple[Any, ...] = (), ids: Any = None, key_of: Any = None, key_vectors: Any = None,
                 blob: Any = None, offsets: Any = None, df: dict[str, int] | None = None,
                 word_df: dict[str, int] | None = None, key_texts: list[str] | None = None,
                 key_rows: Any = None, key_starts: Any = None, scope_names: list[str] | None = None,
                 scope_of: Any = None) -> None:
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
                key_texts: list[str] | None = None) -> None:
        """Bring the index in line with the store's active memories (new ones read and embedded, gone ones dropped)."""
        known = list(key_texts if key_texts is not None else self._key_texts or [])
        if self._extends(source, state):
            texts = {t: n for n, t in enumerate(known)}
            new_keys: list[str] = []
            entries: dict[int, Entry] = {}
            for page in _pages(source, int(self.ids[-1])):
                entries.update(self._entries(source, page, texts, new_keys))
            # state ends with (active memories, largest memory id): see index_for.
            if len(self.ids) + len(entries) == int(state[-2]):
                self._extend(embedder, entries, new_keys, texts)
                self.state = state
                return
        self._rebuild(source, embedder, {t: n for n, t in enumerate(known)})
        self.state = state

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

    def _entries(self, source: Store, memories: Iterable[Any], texts: dict[str, int],
                 new_keys: list[str]) -> dict[int, Entry]:
        """Return the entries of memories read from the store, naming new keys in `texts` and `new_keys`."""
        out = {}
        for memory in memories:
            actions = [step.action for step in source.memories.trajectory(memory.trajectory_id).steps]
            args = arguments(actions)
            key = memory_key(memory.task, args)
            if key not in texts:
                texts[key] = len(texts)
                new_keys.append(key)
            out[memory.id] = Entry(memory.trajectory_id, memory.outcome, task_words(memory.task), args,
                                   verbs(actions), texts[key], key_words(key), memory.scope)
        return out

    def _embed_keys(self, embedder: Embedder, new_keys: list[str], texts: dict[str, int]) -> None:
        import numpy as np

        if new_keys:
            vectors = np.asarray(embedder.embed(new_keys), dtype=np.float32)
            self.key_vectors = vectors if not len(self.key_vectors) else np.vstack([self.key_vectors, vectors])
        self._key_texts = list(texts)

    @staticmethod
    def _raw(entries: Iterable[Entry]) -> list[bytes]:
        return [
            "\t".join(
                [e.trajectory_id, e.outcome, *(" ".join(ws) for ws in (e.task_words, e.args, e.verbs, e.key_words)),
                 e.scope]
            ).encode()
            for e in entries
        ]

    def _extend(self, embedder: Embedder, entries: dict[int, Entry], new_keys: list[str],
                texts: dict[str, int]) -> None:
        """Append the entries of memories added since (ids above every indexed one)."""
        import numpy as np

        self._embed_keys(embedder, new_keys, texts)
        order = sorted(entries)
        raws = self._raw(entries[i] for i in order)
        self.ids = np.concatenate([self.ids, np.array(order, dtype=np.int64)])
        self.key_of = np.concatenate([self.key_of, np.array([entries[i].key for i in order], dtype=np.int64)])
        self._blob = np.concatenate([self._blob, np.frombuffer(b"".join(raws), dtype=np.uint8)])
        ends = int(self._offsets[-1]) + np.cumsum([len(r) for r in raws], dtype=np.int64)
        self._offsets = np.concatenate([self._offsets, ends])
        self.scope_names = self.scope_names + sorted({e.scope for e in entries.values()} - set(self.scope_names))
        self.scope_of = np.concatenate([self.scope_of, self._scope_numbers(entries[i] for i in order)])
        self._decoded.update(entries)
        _count(self.df, (e.verbs for e in entries.values()))
        _count(self.word_df, (e.key_words for e in entries.values()))
        self._regroup()

    def _rebuild(self, source: Store, embedder: Embedder, texts: dict[str, int]) -> None:
        """Index every active memory again, reusing the entries of those already indexed."""
        import numpy as np

        entries: dict[int, Entry] = {}
        new_keys: list[str] = []
        for page in _pages(source, 0):
            reused = {m.id: e for m in page if (e := self.entry(m.id)) is not None and e.trajectory_id == m.trajectory_id}
            entries.update(reused)
            entries.update(self._entries(source, (m for m in page if m.id not in reused), texts, new_keys))
        self._embed_keys(embedder, new_keys, texts)
        self.ids = np.array(sorted(entries), dtype=np.int64)
        self.key_of = np.array([entries[int(i)].key for i in self.ids], dtype=np.int64)
        raws = self._raw(entries[int(i)] for i in self.ids)
        self._blob = np.frombuffer(b"".join(raws), dtype=np.uint8)
        self._offsets = np.cumsum([0] + [len(r) for r in raws], dtype=np.int64)
        self.scope_names = sorted({e.scope for e in entries.values()})
        self.scope_of = self._scope_numbers(entries[int(i)] for i in self.ids)
        self._decoded = entries
        self.df = _count({}, (e.verbs for e in entries.values()))
        self.word_df = _count({}, (e.key_words for e in entries.values()))
        self._regroup()

    def _scope_numbers(self, entries: Iterable[Entry]) -> Any:
        """Return the entries' scopes as positions in `scope_names`."""
        import numpy as np

        number = {name: n for n, name in enumerate(self.scope_names)}
        return np.array([number[e.scope] for e in entries], dtype=np.int32)

    def _regroup(self) -> None:
        """Recompute the words' IDF and each key's rows after the entries changed."""
        import numpy as np

        self.idf, self.word_idf = _idf(self.df, len(self.ids)), _idf(self.word_df, len(self.ids))
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
        import numpy as np

        if self._key_rows is None or self._key_starts is None:
            self._regroup()
        # A random id of this save: key_texts() reads the keys later and must find the same save (inode numbers are
        # reused as concurrent recalls replace the file, so they cannot tell one save from another).
        meta = {"version": INDEX_VERSION, "state": list(self.state), "df": self.df, "word_df": self.word_df,
                "scopes": self.scope_names, "save": os.urandom(8).hex()}
        keys = json.dumps(self._key_texts or []).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        # Task words and arguments come from the store, which is readable by its owner only: so is this file.
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "wb") as f:
            np.savez(
                f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), ids=self.ids, key_of=self.key_of,
                vectors=self.key_vectors, blob=self._blob, offsets=self._offsets,
                keys=np.frombuffer(keys, dtype=np.uint8), key_rows=self._key_rows, key_starts=self._key_starts,
                scope_of=self.scope_of,
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ProcedureIndex | None:
        """Return the index saved at `path` (mapped; its key texts left unread), or None when missing, unreadable or stale."""
        import numpy as np

        try:
            data, _ = _mapped_npz(path)
            meta = json.loads(data["meta"].tobytes())
            if meta.get("version") in OLDER_VERSIONS:
                # Only the store's file and model (the state's first two) and the keys are kept: the entries are
                # read again from the store, and the keys already embedded are not embedded again.
                texts = json.loads(data["keys"].tobytes())[: len(data["vectors"])]
                return cls(tuple(meta["state"][:2]), key_vectors=np.array(data["vectors"]), key_texts=texts)
            if meta.get("version") != INDEX_VERSION:
                return None
            index = cls(tuple(meta["state"]), data["ids"], data["key_of"], data["vectors"], data["blob"],
                        data["offsets"], meta["df"], meta["word_df"], None, data["key_rows"], data["key_starts"],
                        meta["scopes"], data["scope_of"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, struct.error):
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


# Active memories read from the store at a time: whole memories (scripts, runs) are big, only their entries are kept.
PAGE = 5000


def _pages(source: Store, above: int) -> Iterable[list[Any]]:
    """Yield the active memories with ids above `above`, newest first, PAGE at a time."""
    offset = 0
    while True:
        page = source.memories.list(status="active", limit=PAGE, offset=offset)
        fresh = [m for m in page if m.id > above]
        if fresh:
            yield fresh
        if len(fresh) < len(page) or len(page) < PAGE:
            return
        offset += PAGE


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


