"""Task text -> ranked memories under a retrieval policy, a similarity floor and a token budget."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from .embed import get_embedder, is_default, resolve_embed_model
from .errors import MempError
from .records import Match, Recall
from .store import Store

POLICIES = ("query", "random")
RANKS = ("similarity", "utility")
# How far a memory's success estimate (0 to 1, 0.5 when nothing is known) moves its score from the cosine.
UTILITY_WEIGHT = 0.2
# Utility re-ranks a wider pool of nearest memories than it returns.
UTILITY_POOL = 4


def new_recall_id() -> str:
    """Return a short unique id for a recall."""
    return "r-" + uuid.uuid4().hex[:12]


def _within_budget(matches: Sequence[Match], max_tokens: int | None) -> list[Match]:
    """Return the matches, best first, that fit in `max_tokens` together; one that does not fit is passed over."""
    if max_tokens is None:
        return list(matches)
    kept, used = [], 0
    for match in matches:
        if used + match.memory.tokens <= max_tokens:
            kept.append(match)
            used += match.memory.tokens
    return kept


def recall(
    store: Store,
    task: str,
    k: int = 3,
    policy: str = "query",
    min_score: float | None = None,
    max_tokens: int | None = None,
    embed_model: str | None = None,
    seed: int | None = None,
    log: bool = True,
    rank: str = "similarity",
) -> Recall:
    """Return the top-`k` memories for `task`, logged under a new recall id for later outcome reporting."""
    task = task.strip()
    if not task:
        raise MempError("the task is empty")
    if k < 1:
        raise MempError("-k must be at least 1")
    if rank not in RANKS:
        raise MempError(f"unknown --rank {rank!r}; choose one of {', '.join(RANKS)}")
    pool = k * UTILITY_POOL if rank == "utility" else k
    if policy == "query":
        embed_id = resolve_embed_model(store, embed_model)
        embedder = get_embedder(None if is_default(embed_id) else embed_id)
        hits = store.nearest(embedder.embed([task])[0], pool)
    elif policy == "random":
        hits = [(memory_id, 0.0) for memory_id in store.random_memories(k, seed)]
    else:
        raise MempError(f"unknown recall policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if min_score is not None:
        hits = [(i, s) for i, s in hits if s >= min_score]
    similarity = dict(hits)
    memories = store.get_memories([i for i, _ in hits])
    matches = [Match(m, similarity[m.id], 0, similarity[m.id]) for m in memories]
    if rank == "utility":
        for match in matches:
            match.score = match.similarity + UTILITY_WEIGHT * (match.memory.success_mean() - 0.5)  # type: ignore[operator]
        matches.sort(key=lambda m: m.score, reverse=True)
    matches = _within_budget(matches[:k], max_tokens)
    for position, match in enumerate(matches, 1):
        match.rank = position
    result = Recall(new_recall_id(), task, policy, matches)
    if log:
        store.log_recall(result.id, task, policy, k, [(m.memory.id, m.score) for m in matches])
    return result
