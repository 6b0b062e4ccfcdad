"""Procedure keys: tasks with their parameters masked, so that tasks needing the same procedure on other objects meet.

A memory's key is its task with the words its own run used as action arguments (`apple` in `take apple 1 from
countertop 1`, file and function names in shell commands) replaced by a placeholder. A new task has no run: its
key masks the words that the memories nearest to it by full-task cosine use as arguments, so the vocabulary of
parameters is learned from the store, never listed by hand. Both keys first pass a small lexicon of general English
procedure words ("chilled", "cold", "refrigerate" read "cool"), since the embedding model places antonyms such as
"hot" and "cold" close together. The `procedural` policy ranks memories by a weighted sum of the two tasks' cosine,
the two keys' cosine and the overlap of the words left in the keys, and collapses near-copies (near-identical tasks
run with near-identical steps) into one match that says how many it stands for.

What it needs from the store is `ProcedureSource`; the keys live in a side file beside the store (`index_for`),
derived from it and brought up to date when its memories change. In the store's schema they would be one more
vector per memory (the key's), its argument words and action verbs, written at ingest.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .keywords import STOPWORDS

if TYPE_CHECKING:
    from .embed import Embedder
    from .records import Memory, Trajectory

PLACEHOLDER = "something"
# A match's score: TASK_WEIGHT x the full tasks' cosine + KEY_WEIGHT x the procedure keys' cosine + the rest x the
# overlap of the keys' remaining words (IDF-weighted Jaccard; what is left once parameters are masked names the
# procedure, so "heat" and "cool" count as different words however close the model places them). Chosen with
# bench/quality.py on the dev paraphrases, the held-out ALFWorld tasks and the graded set, and with object traps on
# the bundled examples (tests/test_recall_quality.py): the full-task cosine alone lets shared objects win there.
TASK_WEIGHT = 0.3
KEY_WEIGHT = 0.3
# How many nearest memories (by full-task cosine) teach a new task which of its words are parameters.
NEIGHBOURS = 50
# A word of the new task is a parameter when at least this share of the neighbours whose task has it used it as an
# argument; a word no neighbour's task has, when this share of all neighbours used it as an argument.
PARAMETER_SHARE = 0.5
ARGUMENT_SHARE = 0.1
# Candidates beyond the nearest by full-task cosine: members of the best-matching keys, up to this many.
KEY_CANDIDATES = 400
# Near-copies: the same outcome and the same task (cosine SAME_TASK), or a task at least COPY_TASK alike with procedure
# keys as close and the runs' verbs alike by at least COPY_STEPS: the Jaccard of the two sets of action verbs,
# each weighted by its inverse document frequency in the store, since runs of one task differ in common steps such
# as "go" or "open" while rare ones ("heat", "cool") tell procedures apart. Looked for among COPY_POOL candidates
# per match asked for.
COPY_TASK = 0.95
SAME_TASK = 0.99
COPY_STEPS = 0.5
COPY_POOL = 8
# Arguments kept per memory in the index (shell runs name thousands of tokens; the first ones are enough).
MAX_ARGUMENTS = 300
INDEX_VERSION = "7"

# General English procedure words and their common synonyms, each read as one canonical word. Not a list of any
# benchmark's objects: verbs and states that change which procedure a task needs. Measured to help on the
# paraphrase test split as well as dev (bench/quality/README.md).
LEXICON_GROUPS = {
    "heat": "heat heats heated heating hot warm warms warmed warming reheat reheats reheated cook cooks cooked",
    "cool": "cool cools cooled cooling cold colder chill chills chilled chilling refrigerate refrigerated freeze "
    "frozen iced icy",
    "clean": "clean cleans cleaned cleaning wash washes washed washing rinse rinses rinsed rinsing scrub scrubs "
    "scrubbed wipe wipes wiped cleanse cleansed",
    "examine": "examine examines examined inspect inspects inspected look looks view views study studies observe "
    "observes",
    "two": "two both pair couple 2",
}
LEXICON = {word: head for head, group in LEXICON_GROUPS.items() for word in group.split()}
_KEEP = STOPWORDS | set(LEXICON.values())
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_TOKEN = re.compile(r"[A-Za-z0-9]+")


class ProcedureSource(Protocol):
    """What the procedural policy needs from a store."""

    path: Path

    def keyword_state(self) -> tuple[int, ...]:
        """Return numbers that change whenever memories are added or change status."""
        ...

    def list_memories(self, limit: int | None = None, kind: str | None = None, outcome: str | None = None,
                      status: str | None = None) -> list[Memory]:
        """Return memories (here: the active ones)."""
        ...

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """Return the run a memory was built from."""
        ...

    def nearest_many(self, vectors: Sequence[Sequence[float]], k: int) -> list[list[tuple[int, float]]]:
        """Return the k active memories nearest each vector by task cosine."""
        ...

    def similarities(self, vector: Sequence[float], memory_ids: Sequence[int]) -> dict[int, float]:
        """Return the task cosine of each memory to the vector."""
        ...

    def vector(self, memory_id: int) -> list[float]:
        """Return a memory's task vector."""
        ...


def words(text: str) -> list[str]:
    """Return the lower-cased words of a text."""
    return [w.lower() for w in _WORD.findall(text)]


def _forms(word: str) -> tuple[str, ...]:
    """Return a word and its likely singulars ("apples" -> "apple"), so plurals find their argument."""
    forms = [word]
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s"):
        forms.append(word[:-1])
    return tuple(forms)


def canonical(text: str) -> str:
    """Return the text with each lexicon word replaced by its canonical procedure word."""
    return _TOKEN.sub(lambda m: LEXICON.get(m.group(0).lower(), m.group(0)), text)


def arguments(actions: Iterable[str]) -> frozenset[str]:
    """Return the words a run's actions take as arguments: every word of an action but its first (the verb)."""
    found: dict[str, None] = {}
    for action in actions:
        for word in words(action)[1:]:
            found.setdefault(word)
    return frozenset(list(found)[:MAX_ARGUMENTS])


def verbs(actions: Iterable[str]) -> frozenset[str]:
    """Return the first words of a run's actions: what its steps do, without their parameters."""
    return frozenset(ws[0] for ws in (words(a) for a in actions) if ws)


def _masked(text: str, pick: Callable[[list[str]], set[int]]) -> str:
    """Return the text with the words at the positions `pick` chooses replaced by one placeholder per run of them."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    chosen = pick([text[a:b].lower() for a, b in spans])
    out, last, masking = [], 0, False
    for i, (start, end) in enumerate(spans):
        if i in chosen:
            gap = text[last:start]
            out.append("" if masking and not gap.strip() else gap + PLACEHOLDER)
            masking = True
        else:
            out.append(text[last:end])
            masking = False
        last = end
    out.append(text[last:])
    return "".join(out)


def _parameters(task_words: list[str], is_argument: Callable[[tuple[str, ...]], bool]) -> set[int]:
    """Return positions of parameter words: single words, or two words that the runs write as one ("dining table")."""
    chosen = set()
    for i, word in enumerate(task_words):
        if word not in _KEEP and len(word) > 2 and is_argument(_forms(word)):
            chosen.add(i)
        # The second word may be a stopword too: "garbage can" is the runs' `garbagecan`.
        if i + 1 < len(task_words) and word not in _KEEP and is_argument(_forms(word + task_words[i + 1])):
            chosen.update((i, i + 1))
    return chosen


def task_words(task: str) -> frozenset[str]:
    """Return a task's words and its adjacent pairs written as one, with their singulars, as `_parameters` looks up."""
    ws = words(task)
    return frozenset(f for w in ws + [a + b for a, b in itertools.pairwise(ws)] for f in _forms(w))


def memory_key(task: str, args: frozenset[str]) -> str:
    """Return a memory's procedure key: its task, canonical, with the words its own run used as arguments masked."""
    return _masked(canonical(task), lambda ws: _parameters(ws, lambda forms: any(f in args for f in forms)))


def query_key(task: str, neighbours: Sequence[tuple[frozenset[str], frozenset[str]]]) -> str:
    """Return a new task's procedure key, masking the words its neighbours (task words, arguments) use as arguments."""
    if not neighbours:
        return canonical(task)

    def is_argument(forms: tuple[str, ...]) -> bool:
        having = [args for words_, args in neighbours if any(f in words_ for f in forms)]
        if having:
            return sum(any(f in args for f in forms) for args in having) >= PARAMETER_SHARE * len(having)
        return sum(any(f in args for f in forms) for _, args in neighbours) >= ARGUMENT_SHARE * len(neighbours)

    return _masked(canonical(task), lambda ws: _parameters(ws, is_argument))


def fuse(task_cosine: float, key_cosine: float, word_overlap: float) -> float:
    """Return a match's procedural score from the tasks' cosine, the keys' cosine and their procedure words' overlap."""
    return TASK_WEIGHT * task_cosine + KEY_WEIGHT * key_cosine + (1.0 - TASK_WEIGHT - KEY_WEIGHT) * word_overlap


def key_words(key: str) -> frozenset[str]:
    """Return a procedure key's content words: what is left of the task once its parameters are masked."""
    return frozenset(w for w in words(key) if w not in STOPWORDS and w != PLACEHOLDER and len(w) > 1)


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
                 word_idf: dict[str, float] | None = None, key_texts: list[str] | None = None) -> None:
        import numpy as np

        self.state = state
        self.ids = ids if ids is not None else np.zeros(0, dtype=np.int64)  # sorted
        self.key_of = key_of if key_of is not None else np.zeros(0, dtype=np.int64)
        self.key_vectors = key_vectors if key_vectors is not None else np.zeros((0, 0), dtype=np.float32)
        self._blob, self._offsets = blob, offsets if offsets is not None else np.zeros(1, dtype=np.int64)
        self.idf = idf or {}
        self.word_idf = word_idf or {}
        self._key_texts = key_texts
        self._path: Path | None = None
        self._decoded: dict[int, Entry] = {}

    def entry(self, memory_id: int) -> Entry | None:
        """Return what the index keeps of a memory, or None when it is not indexed."""
        if memory_id in self._decoded:
            return self._decoded[memory_id]
        row = int(self.ids.searchsorted(memory_id))
        if row >= len(self.ids) or int(self.ids[row]) != memory_id:
            return None
        raw = self._blob[int(self._offsets[row]) : int(self._offsets[row + 1])].decode("utf-8")
        trajectory_id, outcome, task_words_, args, verbs_, key_words_ = raw.split("\t")
        entry = Entry(trajectory_id, outcome, frozenset(task_words_.split()), frozenset(args.split()),
                      frozenset(verbs_.split()), int(self.key_of[row]), frozenset(key_words_.split()))
        self._decoded[memory_id] = entry
        return entry

    def near_copies(self, a: Entry, b: Entry, task_cosine: float) -> bool:
        """Return True when two memories are near-copies: alike tasks, outcomes, keys and (rarer) steps."""
        if task_cosine < COPY_TASK or a.outcome != b.outcome:
            return False
        if task_cosine >= SAME_TASK:
            return True  # the same task: its runs differ in how they explored, and in what they took for parameters
        if float(self.key_vectors[a.key] @ self.key_vectors[b.key]) < COPY_TASK:
            return False
        union = sum(self.idf.get(v, 0.0) for v in a.verbs | b.verbs)
        return union == 0 or sum(self.idf.get(v, 0.0) for v in a.verbs & b.verbs) / union >= COPY_STEPS

    def refresh(self, source: ProcedureSource, embedder: Embedder, state: tuple[Any, ...],
                key_texts: list[str] | None = None) -> None:
        """Bring the index in line with the store's active memories (new ones read and embedded, gone ones dropped)."""
        import numpy as np

        entries = {int(i): e for i in self.ids if (e := self.entry(int(i))) is not None}
        texts = {t: n for n, t in enumerate(key_texts if key_texts is not None else self._key_texts or [])}
        active = {m.id: m for m in source.list_memories(status="active")}
        entries = {i: e for i, e in entries.items() if i in active and e.trajectory_id == active[i].trajectory_id}
        added: list[str] = []
        for memory in active.values():
            if memory.id in entries:
                continue
            actions = [step.action for step in source.trajectory(memory.trajectory_id).steps]
            args = arguments(actions)
            key = memory_key(memory.task, args)
            if key not in texts:
                texts[key] = len(texts)
                added.append(key)
            entries[memory.id] = Entry(
                memory.trajectory_id, memory.outcome, task_words(memory.task), args, verbs(actions), texts[key],
                key_words(key),
            )
        if added:
            vectors = np.asarray(embedder.embed(added), dtype=np.float32)
            self.key_vectors = vectors if not len(self.key_vectors) else np.vstack([self.key_vectors, vectors])
        self._key_texts = list(texts)
        self.state = state
        self.ids = np.array(sorted(entries), dtype=np.int64)
        self.key_of = np.array([entries[int(i)].key for i in self.ids], dtype=np.int64)
        raws = [
            "\t".join(
                [e.trajectory_id, e.outcome, *(" ".join(ws) for ws in (e.task_words, e.args, e.verbs, e.key_words))]
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

        meta = {"version": INDEX_VERSION, "state": list(self.state), "idf": self.idf, "word_idf": self.word_idf}
        keys = json.dumps(self._key_texts or []).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        # Task words and arguments come from the store, which is readable by its owner only: so is this file.
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "wb") as f:
            np.savez(
                f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), ids=self.ids, key_of=self.key_of,
                vectors=self.key_vectors, blob=np.frombuffer(self._blob, dtype=np.uint8), offsets=self._offsets,
                keys=np.frombuffer(keys, dtype=np.uint8),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ProcedureIndex | None:
        """Return the index saved at `path` (its key texts left unread), or None when missing, unreadable or stale."""
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes())
                if meta.get("version") != INDEX_VERSION:
                    return None
                index = cls(tuple(meta["state"]), data["ids"], data["key_of"], data["vectors"],
                            data["blob"].tobytes(), data["offsets"], meta["idf"], meta["word_idf"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        index._path = path
        return index

    def key_texts(self) -> list[str]:
        """Return the key texts (read from the saved file on first use: only refreshing needs them)."""
        if self._key_texts is None:
            import numpy as np

            self._key_texts = []
            if self._path is not None:
                with np.load(self._path, allow_pickle=False) as data:
                    self._key_texts = json.loads(data["keys"].tobytes())
        return self._key_texts


_indexes: dict[tuple[str, str], ProcedureIndex] = {}


def index_path(store: ProcedureSource) -> Path:
    """Return the side file beside the store that keeps its procedure index (derived, rebuilt from the store)."""
    path = Path(store.path)
    return path.with_name(path.name + "-procedures.npz")


def index_for(store: ProcedureSource, embedder: Embedder, embed_id: str) -> ProcedureIndex:
    """Return the store's procedure index: held per process, kept beside the store, updated when the store changed."""
    try:
        inode = os.stat(store.path).st_ino
    except OSError:
        inode = 0
    # Keyed by the store file's inode too, so a side file left by a deleted store of the same name is never trusted.
    state = (inode, embed_id, *store.keyword_state())
    key = (str(store.path), embed_id)
    index = _indexes.get(key)
    if index is not None and index.state == state:
        return index
    path = index_path(store)
    if index is None:
        loaded = ProcedureIndex.load(path)
        index = loaded if loaded is not None and loaded.state[:2] == state[:2] else ProcedureIndex()
    if index.state != state:
        index.refresh(store, embedder, state, index.key_texts())
        try:
            index.save(path)
        except OSError:
            pass  # a read-only folder only costs the next process the rebuild
    _indexes[key] = index
    return index


def rank(
    store: ProcedureSource, tasks: Sequence[str], vectors: Sequence[Sequence[float]], embedder: Embedder,
    embed_id: str, pool: int,
) -> list[list[tuple[int, float, float]]]:
    """Return, per task, the best `pool` (memory id, procedural score, task cosine), best first."""
    import numpy as np

    index = index_for(store, embedder, embed_id)
    nearest = store.nearest_many(vectors, max(NEIGHBOURS, pool))
    keys = []
    for task, hits in zip(tasks, nearest):
        entries = [e for i, _ in hits[:NEIGHBOURS] if (e := index.entry(i)) is not None]
        keys.append(query_key(task, [(e.task_words, e.args) for e in entries]))
    key_cos = index.key_cosines(embedder.embed(keys))
    out = []
    for key, vector, hits, cosines in zip(keys, vectors, nearest, key_cos):
        query_words = key_words(key)
        task_cos = dict(hits)
        # The members of the best-matching keys join the nearest tasks as candidates (a key is shared by many).
        order = np.argsort(-cosines, kind="stable")[:KEY_CANDIDATES]
        extra = [int(index.ids[n]) for n in order if int(index.ids[n]) not in task_cos]
        task_cos.update(store.similarities(vector, extra))
        rows = index.ids.searchsorted(list(task_cos))
        scored = []
        for (i, c), r in zip(task_cos.items(), rows):
            indexed = r < len(index.ids) and index.ids[r] == i
            entry = index.entry(i) if indexed else None
            scored.append((i, fuse(c, float(cosines[r]) if indexed else c, index.word_overlap(query_words, entry)), c))
        out.append(sorted(scored, key=lambda t: t[1], reverse=True)[:pool])
    return out


def pool_for(k: int, pool: int) -> int:
    """Return how many candidates to rank so that `k` remain once near-copies collapse."""
    return max(pool, COPY_POOL * k)


def collapse(
    store: ProcedureSource, embedder: Embedder, embed_id: str, ranked: Sequence[int], k: int
) -> list[tuple[int, int]]:
    """Return the best `k` groups of near-copies among memories ranked best first: (best member, group size)."""
    import numpy as np

    index = index_for(store, embedder, embed_id)
    groups: list[tuple[int, list[tuple[Any, Entry]]]] = []  # (best member, [(unit vector, entry) of each member])
    for memory_id in ranked:
        entry = index.entry(memory_id)
        vec = np.asarray(store.vector(memory_id), dtype=np.float32)
        for _, members in groups:
            # A near-copy of any member joins the group: copies of one task explore differently, and each
            # resembles some of the others more than the first.
            if entry is not None and any(index.near_copies(entry, e, float(vec @ v)) for v, e in members):
                members.append((vec, entry))
                break
        else:
            if len(groups) == k:
                continue  # past the k-th group only near-copies of kept ones still count
            groups.append((memory_id, [(vec, entry)] if entry is not None else []))
    return [(best, max(1, len(members))) for best, members in groups]
