"""Building the procedure index in bounded memory: the store read a page at a time, rows streamed to temporary files.

A row is what recall needs of one active memory (its trajectory id, outcome, task words, argument words, action
verbs, key words and scope, as one tab-separated UTF-8 entry) and its key's number. Entries go to a temporary file as
they are made and key vectors to another, embedded a batch at a time; only per-row numbers (ids, keys, offsets,
scopes, trajectory hashes: 36 bytes a row) and the distinct keys' texts are held. Rows of an index built before are
copied from its mapped file, not made again: all of them when the store only added memories since, those of
memories still active as they were after a change of status.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .procedural import arguments, key_words, memory_key, task_words, verbs
from .procedure_index_file import INDEX_VERSION, release, tid_hash, write_index

if TYPE_CHECKING:
    from .embed import Embedder
    from .procedure_index import ProcedureIndex
    from .store import Store

# Active memories read from the store at a time (their ids, then their tasks and runs).
PAGE = 5000
# New keys embedded at a time: the embedder runs a batch on every core, and the texts are not held longer.
EMBED_BATCH = 256


def entry_text(trajectory_id: str, outcome: str, task: str, scope: str,
               steps_json: str) -> tuple[str, str, frozenset[str], frozenset[str]]:
    """Return a memory's entry (as the index stores it, tab-separated), its procedure key, verbs and key words."""
    actions = [step["action"] for step in json.loads(steps_json)]
    args = arguments(actions)
    key = memory_key(task, args)
    verbs_, key_words_ = verbs(actions), key_words(key)
    fields = (task_words(task), args, verbs_, key_words_)
    return "\t".join([trajectory_id, outcome, *(" ".join(words_) for words_ in fields), scope]), key, verbs_, key_words_


def counted(df: dict[str, int], words_: Iterable[str], by: int = 1) -> None:
    """Add `by` to the document frequency of each word (a word of one memory counts once)."""
    for word in words_:
        df[word] = df.get(word, 0) + by
        if not df[word]:
            del df[word]


class Writer:
    """The rows of a new index, in id order: added one by one from the store or copied in runs from an older index."""

    def __init__(self, folder: Path, embedder: Embedder, known: Sequence[str], vectors: Any,
                 old: ProcedureIndex | None) -> None:
        import numpy as np

        self.embedder = embedder
        # Unnamed temporary files (gone with the process whatever happens), closed by close() or finish().
        self.blob: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self.vectors: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self.blob_size = 0
        self.ids, self.key_of, self.ends = array("q"), array("q"), array("q")
        self.scope_of, self.tids = array("i"), array("Q")
        self.texts = {text: n for n, text in enumerate(known)}
        self.pending: list[str] = []
        self.keys = len(known)
        self.dim = int(vectors.shape[1]) if len(vectors) else 0
        for start in range(0, len(vectors), 65536):
            self.vectors.write(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32).tobytes())
        self.old = old
        self.scope_names: list[str] = list(old.scope_names) if old is not None else []
        self.scopes = {name: n for n, name in enumerate(self.scope_names)}
        self.df: dict[str, int] = dict(old.df) if old is not None else {}
        self.word_df: dict[str, int] = dict(old.word_df) if old is not None else {}

    def add(self, rows: Iterable[tuple[int, str, str, str, str, str]]) -> None:
        """Append rows made from the store's (id, trajectory id, task, outcome, scope, steps JSON), ids ascending."""
        chunk: list[bytes] = []
        for memory_id, trajectory_id, task, outcome, scope, steps in rows:
            entry, key, verbs_, key_words_ = entry_text(trajectory_id, outcome, task, scope, steps)
            number = self.texts.get(key)
            if number is None:
                number = self.texts[key] = len(self.texts)
                self.pending.append(key)
            raw = entry.encode()
            chunk.append(raw)
            self.blob_size += len(raw)
            self.ids.append(memory_id)
            self.key_of.append(number)
            self.ends.append(self.blob_size)
            self.scope_of.append(self._scope(scope))
            self.tids.append(tid_hash(trajectory_id))
            counted(self.df, verbs_)
            counted(self.word_df, key_words_)
        self.blob.write(b"".join(chunk))
        if len(self.pending) >= EMBED_BATCH:
            self._embed()

    def copy(self, rows: Any) -> None:
        """Append rows of the older index (ascending row numbers, their ids above every row's here)."""
        import numpy as np

        old = self.old
        assert old is not None
        if not len(rows):
            return
        rows = np.asarray(rows, dtype=np.int64)
        starts, stops = old._offsets[rows], old._offsets[rows + 1]
        # Runs of consecutive rows are one slice of the old blob each.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, last in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            start, stop = int(starts[first]), int(stops[last - 1])
            for at in range(start, stop, 1 << 22):
                self.blob.write(old._blob[at : min(stop, at + (1 << 22))].tobytes())
                release(old._blob, at, min(stop, at + (1 << 22)))
        self.ends.frombytes((self.blob_size + np.cumsum(stops - starts)).astype(np.int64).tobytes())
        self.blob_size = self.ends[-1]
        self.ids.frombytes(old.ids[rows].astype(np.int64).tobytes())
        self.key_of.frombytes(old.key_of[rows].astype(np.int64).tobytes())
        self.scope_of.frombytes(old.scope_of[rows].astype(np.int32).tobytes())  # the old scope names, extended
        self.tids.frombytes(old.tids[rows].astype(np.uint64).tobytes())

    def drop_counts(self, rows: Any) -> None:
        """Take the older index's rows that are not copied out of the document frequencies."""
        assert self.old is not None
        for row in rows:
            raw = self.old._blob[int(self.old._offsets[row]) : int(self.old._offsets[row + 1])].tobytes().decode()
            fields = raw.split("\t")
            counted(self.df, fields[4].split(), -1)
            counted(self.word_df, fields[5].split(), -1)

    def _scope(self, scope: str) -> int:
        number = self.scopes.get(scope)
        if number is None:
            number = self.scopes[scope] = len(self.scope_names)
            self.scope_names.append(scope)
        return number

    def _embed(self) -> None:
        import numpy as np

        if not self.pending:
            return
        vectors = np.asarray(self.embedder.embed(self.pending), dtype=np.float32)
        self.dim = int(vectors.shape[1])
        self.vectors.write(vectors.tobytes())
        self.keys += len(self.pending)
        self.pending = []

    def close(self) -> None:
        """Drop the temporary files (a writer given up, or finished)."""
        self.blob.close()
        self.vectors.close()

    def finish(self, path: Path, state: tuple[Any, ...]) -> str:
        """Write the index to `path` (readable by its owner only); return the save's id."""
        import numpy as np

        self._embed()
        scope_of = np.frombuffer(self.scope_of, dtype=np.int32) if self.scope_of else np.zeros(0, dtype=np.int32)
        held = np.bincount(scope_of, minlength=len(self.scope_names)) > 0
        if not held.all():
            # Only scopes that hold a row are named: recall takes a search of all of them as one of every scope.
            scope_of = (np.cumsum(held) - 1).astype(np.int32)[scope_of]
            self.scope_names = [name for name, kept in zip(self.scope_names, held) if kept]
        key_of = np.frombuffer(self.key_of, dtype=np.int64) if self.key_of else np.zeros(0, dtype=np.int64)
        key_rows = np.argsort(key_of, kind="stable")
        key_starts = np.searchsorted(key_of[key_rows], np.arange(self.keys + 1))
        # A random id of this save: key_texts() reads the keys later and must find the same save (inode numbers are
        # reused as concurrent recalls replace the file, so they cannot tell one save from another).
        save = os.urandom(8).hex()
        meta = {"version": INDEX_VERSION, "state": list(state), "df": self.df, "word_df": self.word_df,
                "scopes": self.scope_names, "save": save}

        def numbers(values: array[Any], dtype: Any) -> Any:
            return np.frombuffer(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)

        write_index(path, meta, {
            "ids": numbers(self.ids, np.int64), "key_of": key_of,
            "vectors": (np.float32, (self.keys, self.dim), self.vectors),
            "blob": (np.uint8, (self.blob_size,), self.blob),
            "offsets": np.concatenate([np.zeros(1, dtype=np.int64), numbers(self.ends, np.int64)]),
            "key_rows": key_rows, "key_starts": key_starts,
            "scope_of": scope_of, "tids": numbers(self.tids, np.uint64),
        }, list(self.texts))
        self.close()
        return save


def extend(writer: Writer, source: Store, old: ProcedureIndex, active: int) -> bool:
    """Write the old index's rows and the memories added above them; False when that does not make `active` rows."""
    import numpy as np

    writer.copy(np.arange(len(old.ids)))
    last = int(old.ids[-1])
    while page := source.memories.active_page(last, PAGE):
        writer.add(source.memories.index_rows([memory_id for memory_id, _ in page]))
        last = page[-1][0]
    return len(writer.ids) == active


def rebuild(writer: Writer, source: Store, old: ProcedureIndex | None) -> None:
    """Write a row for every active memory: copied from the old index where it holds the memory as it is."""
    import numpy as np

    kept = np.zeros(len(old.ids) if old is not None else 0, dtype=bool)
    last = 0
    while page := source.memories.active_page(last, PAGE):
        last = page[-1][0]
        ids = np.array([memory_id for memory_id, _ in page], dtype=np.int64)
        reused = np.zeros(len(page), dtype=bool)
        rows = np.zeros(len(page), dtype=np.int64)
        if old is not None and len(old.ids):
            rows = np.minimum(old.ids.searchsorted(ids), len(old.ids) - 1)
            hashes = np.array([tid_hash(trajectory_id) for _, trajectory_id in page], dtype=np.uint64)
            reused = (old.ids[rows] == ids) & (old.tids[rows] == hashes)
        # In id order: runs of reused rows copied, the memories between them read from the store.
        new_ids = ids[~reused].tolist()
        # Keyed by id: a memory purged between the two reads is left out.
        fresh = {row[0]: row for row in source.memories.index_rows(new_ids)} if new_ids else {}
        start = 0
        while start < len(page):
            stop = start
            while stop < len(page) and reused[stop] == reused[start]:
                stop += 1
            if reused[start]:
                writer.copy(rows[start:stop])
                kept[rows[start:stop]] = True
            else:
                writer.add(fresh[i] for i in ids[start:stop].tolist() if i in fresh)
            start = stop
    if old is not None:
        writer.drop_counts(np.flatnonzero(~kept))
