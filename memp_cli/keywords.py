"""Keywords of a task for the AveFact policy: extracted offline, embedded one word at a time, stored once per word."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embed import Embedder
    from .store import Store

MAX_KEYWORDS = 12
# Function words and filler; verbs stay, since in procedural tasks the verb is most of the meaning ("heat" vs "cool").
STOPWORDS = frozenset(
    """a an the and or but of to in on at for from with into onto by as is are was were be been being it its this that
    these those some any each every all both your you my our their his her them they we i me us it's there here then
    than so such very can could should would will shall may might must do does did done not no nor only also just
    about above after again against before below between during over under up down out off once same other own too
    more most few what which who whom when where why how if while until because please need needs want wants using
    use""".split()
)
WORD = re.compile(r"[a-z][a-z0-9_\-]*[a-z0-9]|[a-z]")


def extract(task: str) -> list[str]:
    """Return the task's keywords in order: lower-cased content words, numbers and stopwords dropped."""
    words = [w for w in WORD.findall(task.lower()) if w not in STOPWORDS and len(w) > 1]
    return list(dict.fromkeys(words))[:MAX_KEYWORDS]


def ensure(store: Store, embedder: Embedder) -> int:
    """Extract and embed keywords of memories that have none yet; return how many memories were done."""
    todo = store.memories_without_keywords()
    for start in range(0, len(todo), 512):
        chunk = todo[start : start + 512]
        links = [(memory_id, extract(task)) for memory_id, task in chunk]
        words = sorted({w for _, ws in links for w in ws})
        new = sorted(set(words) - store.known_keywords(words))
        vectors = dict(zip(new, embedder.embed(new))) if new else {}
        store.add_keywords(vectors, links)
    return len(todo)


class KeywordIndex:
    """Keyword vectors of the active memories, held in memory for AveFact scoring."""

    def __init__(self, store: Store) -> None:
        import numpy as np

        self.memory_ids, members, self.words, blobs = store.keyword_index()
        dim = len(blobs[0]) // 4 if blobs else 0
        self.matrix = (
            np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim) if blobs else np.zeros((0, 0))
        )
        # Flattened membership: memory i owns keyword rows flat[offsets[i]:offsets[i + 1]].
        self.flat = np.array([k for ks in members for k in ks], dtype=np.int64)
        self.offsets = np.cumsum([0] + [len(ks) for ks in members])
        # Words shared by many tasks ("clean", "heat", "two") name the procedure; rare ones name the objects it
        # acts on, which a procedure takes as parameters. Weight keywords by how many memories use them.
        df = np.bincount(self.flat, minlength=len(self.words)).astype(np.float32)
        self.weight = np.log1p(df)

    def scores(self, query_vectors: Any) -> list[tuple[int, float]]:
        """Return (memory id, AveFact score) for every memory.

        Mem^p's AveFact averages, over the new task's keywords, each one's best cosine among a memory's keywords.
        That ignores what the memory adds: "put a cloth in toilet" then matches "put a clean cloth in toilet" fully.
        memp also averages the other way (each memory keyword's best cosine among the task's) and takes the
        harmonic mean of the two, as BERTScore does; on ALFWorld this lifts hit@1 (see README).
        """
        import numpy as np

        if not len(self.memory_ids) or len(query_vectors) == 0:
            return []
        sims = np.asarray(query_vectors, dtype=np.float32) @ self.matrix.T  # (query keywords, stored keywords)
        per_member = sims[:, self.flat]  # (query keywords, flattened memberships)
        starts = self.offsets[:-1]
        # A task keyword weighs what the stored keyword most like it weighs.
        q_weight = self.weight[sims.argmax(axis=1)][:, None] + 1e-6
        best = np.maximum.reduceat(per_member, starts, axis=1)  # (query keywords, memories)
        covered = (best * q_weight).sum(axis=0) / q_weight.sum()  # task keywords found in memory
        m_weight = self.weight[self.flat] + 1e-6
        precise = np.add.reduceat(per_member.max(axis=0) * m_weight, starts) / np.add.reduceat(m_weight, starts)
        covered, precise = np.clip(covered, 1e-6, None), np.clip(precise, 1e-6, None)
        f1 = 2 * covered * precise / (covered + precise)
        return list(zip(self.memory_ids, f1.tolist()))

