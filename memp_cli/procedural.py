"""Procedure keys: tasks with their parameters masked, so that tasks needing the same procedure on other objects meet.

A memory's key is its task with the words its own run used as action arguments (`apple` in `take apple 1 from
countertop 1`, file and function names in shell commands) replaced by a placeholder. A new task has no run: its
key masks the words that the memories nearest to it by full-task cosine use as arguments, so the vocabulary of
parameters is learned from the store, never listed by hand. Both keys first pass a small lexicon of general English
procedure words ("chilled", "cold", "refrigerate" read "cool"), since the embedding model places antonyms such as
"hot" and "cold" close together. The `procedural` policy ranks memories by a weighted sum of the two tasks' cosine,
the two keys' cosine and the overlap of the words left in the keys, and collapses near-copies (near-identical tasks
run with near-identical steps) into one match that says how many it stands for.

Memories' keys are kept by `procedure_index`, beside the store.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .keywords import STOPWORDS

if TYPE_CHECKING:
    from .embed import Embedder
    from .procedure_index import Entry, ProcedureIndex
    from .store import Store

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
# Near-copies (which ones are: procedure_index.COPY_TASK and below) are looked for among COPY_POOL candidates per
# match asked for.
COPY_POOL = 8
# Arguments kept per memory in the index (shell runs name thousands of tokens; the first ones are enough).
MAX_ARGUMENTS = 300

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


def words(text: str) -> list[str]:
    """Return the lower-cased words of a text."""
    return list(_words(text))


# A store's runs repeat their actions ("go to countertop 1"): the procedure index reads each one's words once.
@lru_cache(maxsize=65536)
def _words(text: str) -> tuple[str, ...]:
    if text.isascii():  # lower-cased first: the same words (no ASCII letter comes of lower-casing another one)
        return tuple(_WORD.findall(text.lower()))
    return tuple(w.lower() for w in _WORD.findall(text))


@lru_cache(maxsize=65536)
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
    found = dict.fromkeys(itertools.chain.from_iterable(ws[1:] for ws in map(_words, actions)))
    return frozenset(itertools.islice(found, MAX_ARGUMENTS))


def verbs(actions: Iterable[str]) -> frozenset[str]:
    """Return the first words of a run's actions: what its steps do, without their parameters."""
    return frozenset(ws[0] for ws in map(_words, actions) if ws)


# A task's canonical text, its words' spans in it and the words lower-cased: parsed once per distinct task (runs of one
# task repeat it, and the procedure index keys every memory by it).
@lru_cache(maxsize=16384)
def _parsed(task: str) -> tuple[str, tuple[tuple[int, int], ...], tuple[str, ...]]:
    text = canonical(task)
    spans = tuple((m.start(), m.end()) for m in _WORD.finditer(text))
    return text, spans, tuple(text[a:b].lower() for a, b in spans)


def _masked(task: str, is_argument: Callable[[tuple[str, ...]], bool]) -> str:
    """Return the task, canonical, with its parameter words (as `is_argument` tells them) replaced by one placeholder
    per run of them."""
    text, spans, lowered = _parsed(task)
    chosen = {i for positions, forms in _checks(lowered) if is_argument(forms) for i in positions}
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


@lru_cache(maxsize=16384)
def _checks(task_words: tuple[str, ...]) -> tuple[tuple[tuple[int, ...], tuple[str, ...]], ...]:
    """Return what may be a parameter in a task's words: (positions, the forms to look up), single words or two
    words that the runs write as one ("dining table")."""
    checks: list[tuple[tuple[int, ...], tuple[str, ...]]] = []
    for i, word in enumerate(task_words):
        if word not in _KEEP and len(word) > 2:
            checks.append(((i,), _forms(word)))
        # The second word may be a stopword too: "garbage can" is the runs' `garbagecan`.
        if i + 1 < len(task_words) and word not in _KEEP:
            checks.append(((i, i + 1), _forms(word + task_words[i + 1])))
    return tuple(checks)


@lru_cache(maxsize=16384)
def task_words(task: str) -> frozenset[str]:
    """Return a task's words and its adjacent pairs written as one, with their singulars, as `_checks` looks up."""
    ws = words(task)
    return frozenset(f for w in ws + [a + b for a, b in itertools.pairwise(ws)] for f in _forms(w))


def memory_key(task: str, args: frozenset[str]) -> str:
    """Return a memory's procedure key: its task, canonical, with the words its own run used as arguments masked."""
    return _masked(task, lambda forms: any(f in args for f in forms))


def query_key(task: str, neighbours: Sequence[tuple[frozenset[str], frozenset[str]]]) -> str:
    """Return a new task's procedure key, masking the words its neighbours (task words, arguments) use as arguments."""
    if not neighbours:
        return canonical(task)

    def is_argument(forms: tuple[str, ...]) -> bool:
        having = [args for words_, args in neighbours if any(f in words_ for f in forms)]
        if having:
            return sum(any(f in args for f in forms) for args in having) >= PARAMETER_SHARE * len(having)
        return sum(any(f in args for f in forms) for _, args in neighbours) >= ARGUMENT_SHARE * len(neighbours)

    return _masked(task, is_argument)


def fuse(task_cosine: float, key_cosine: float, word_overlap: float) -> float:
    """Return a match's procedural score from the tasks' cosine, the keys' cosine and their procedure words' overlap."""
    return TASK_WEIGHT * task_cosine + KEY_WEIGHT * key_cosine + (1.0 - TASK_WEIGHT - KEY_WEIGHT) * word_overlap


@lru_cache(maxsize=16384)
def key_words(key: str) -> frozenset[str]:
    """Return a procedure key's content words: what is left of the task once its parameters are masked."""
    return frozenset(w for w in words(key) if w not in STOPWORDS and w != PLACEHOLDER and len(w) > 1)


def rank(
    store: Store, tasks: Sequence[str], vectors: Sequence[Sequence[float]], embedder: Embedder,
    index: ProcedureIndex, pool: int, scopes: Sequence[str] | None = None,
) -> list[list[tuple[int, float, float]]]:
    """Return, per task, the best `pool` (memory id, procedural score, task cosine) of `scopes`, best first.

    `index` is the store's procedure index (`index_for`), looked up once per batch of tasks: each lookup checks the
    store's state, a count of the active memories (~75 ms at 1M).
    """
    if scopes is not None and set(index.scope_names) <= set(scopes):
        # Every active memory is of `scopes` (the index, just checked against the store, names the scopes that hold
        # one): the search need not look up which are (a read of every active id), nor the keys leave any out.
        scopes = None
    nearest = store.vectors.nearest_many(vectors, max(NEIGHBOURS, pool), scopes)
    # Other scopes' keys may match best: they are no candidates (the neighbours above are of `scopes` already).
    keep = index.in_scopes(scopes) if scopes is not None else None
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
        extra = [int(index.ids[n]) for n in index.key_candidates(cosines, KEY_CANDIDATES, keep)
                 if int(index.ids[n]) not in task_cos]
        task_cos.update(store.vectors.similarities(vector, extra))
        rows = index.ids.searchsorted(list(task_cos))
        scored = []
        for (i, c), r in zip(task_cos.items(), rows):
            indexed = r < len(index.ids) and index.ids[r] == i
            entry = index.entry(i) if indexed else None
            key_cos = float(cosines[index.key_of[r]]) if indexed else c
            scored.append((i, fuse(c, key_cos, index.word_overlap(query_words, entry)), c))
        out.append(sorted(scored, key=lambda t: t[1], reverse=True)[:pool])
    return out


def pool_for(k: int, pool: int) -> int:
    """Return how many candidates to rank so that `k` remain once near-copies collapse."""
    return max(pool, COPY_POOL * k)


def collapse(
    store: Store, index: ProcedureIndex, ranked: Sequence[int], k: int,
) -> list[tuple[int, int]]:
    """Return the best `k` groups of near-copies among memories ranked best first: (best member, group size)."""
    import numpy as np

    groups: list[tuple[int, list[tuple[Any, Entry]]]] = []  # (best member, [(unit vector, entry) of each member])
    for memory_id in ranked:
        entry = index.entry(memory_id)
        vec = np.asarray(store.vectors.vector(memory_id), dtype=np.float32)
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
