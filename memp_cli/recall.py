"""Task text -> ranked memories under a retrieval policy, a similarity floor and a token budget."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .choices import Rank, RecallPolicy, values
from .embed import DEFAULT_EMBED_MODEL, get_embedder, is_default, resolve_embed_model
from .errors import MempError
from .records import Match, Recall
from .store import Store

POLICIES = values(RecallPolicy)
DEFAULT_POLICY = RecallPolicy.PROCEDURAL.value
RANKS = values(Rank)
# How far a memory's success estimate (0 to 1, 0.5 when nothing is known) moves its score from the cosine.
UTILITY_WEIGHT = 0.2
# Utility re-ranks a wider pool of candidates than it returns.
UTILITY_POOL = 4
# Reciprocal rank fusion: each list adds 1 / (RRF_K + rank); 60 is the constant of Cormack et al. (2009).
RRF_K = 60
HYBRID_POOL = 50
# --confident: the task cosine below which memp-minilm's matches are mostly of another kind of task. Measured with
# `memp eval` on ALFWorld expert runs and on the bundled examples (see README): 0.5 keeps nearly all right top-1
# matches and drops most cross-domain ones.
CONFIDENT = {DEFAULT_EMBED_MODEL: 0.5}
# Default floors (no --min-score): below them a task gets nothing. Calibrated with bench/quality.py for memp-minilm:
# for each policy the lowest floor that gives nothing to 95% of the hand-written unrelated tasks of the dev split
# (other domains, nonsense); the share of in-domain tasks still matched is in bench/quality/README.md. The
# procedural policy's floor is on its own score, the others' on the tasks' cosine.
FLOORS = {DEFAULT_EMBED_MODEL: {"procedural": 0.25, "query": 0.5, "hybrid": 0.5, "avefact": 0.35}}


def new_recall_id() -> str:
    """Return a short unique id for a recall."""
    # 48 random bits, as uuid4().hex[:12] gave, without importing uuid (~10 ms of a fresh recall).
    return "r-" + os.urandom(6).hex()


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


class _KeywordCache:
    """AveFact keyword indexes of one store, one per set of scopes, rebuilt only when memories or keywords change."""

    # A server answering several teams keeps each team's index, instead of rebuilding one on every change of scope.
    SCOPE_SETS = 8

    def __init__(self) -> None:
        self.key: Any = None
        self.indexes: dict[tuple[str, ...] | None, Any] = {}

    def get(self, store: Store, embedder: Any, extractor: Any, scopes: Sequence[str] | None = None) -> Any:
        from . import keywords

        wanted = None if scopes is None else tuple(sorted(set(scopes)))
        if (id(store), extractor.name, store.keywords.state()) != self.key:
            # Memories or statuses changed: extract what is missing, then rebuild the indexes as they are asked for.
            keywords.ensure(store, embedder, extractor)
            self.indexes = {}
            self.key = (id(store), extractor.name, store.keywords.state())
        if wanted not in self.indexes:
            if len(self.indexes) >= self.SCOPE_SETS:
                self.indexes.pop(next(iter(self.indexes)))
            self.indexes[wanted] = keywords.KeywordIndex(store, scopes)
        return self.indexes[wanted]


_keyword_cache = _KeywordCache()


def _rrf(*ranked: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Return ids fused by reciprocal rank over several best-first lists, best first."""
    fused: dict[int, float] = {}
    for hits in ranked:
        for rank, (memory_id, _) in enumerate(hits, 1):
            fused[memory_id] = fused.get(memory_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)


def candidates(
    store: Store, task: str, vector: list[float], policy: str, pool: int, embedder: Any, seed: int | None = None,
    keywords_model: str | None = None, scopes: Sequence[str] | None = None,
) -> list[tuple[int, float]]:
    """Return (memory id, policy score) best first for a task and its vector under avefact, hybrid or random.

    Only memories of `scopes` (None: every scope) are candidates. The query policy is `Store.nearest_many`, which
    searches all of a batch's vectors in one product.
    """
    from . import keywords

    if policy == "avefact":
        extractor = keywords.extractor_for(store, keywords_model)
        index = _keyword_cache.get(store, embedder, extractor, scopes)
        words = extractor(task) or [task]
        scored = index.scores(embedder.embed(words))
        return sorted(scored, key=lambda kv: kv[1], reverse=True)[:pool]
    if policy == "hybrid":
        dense = store.vectors.nearest(vector, max(pool, HYBRID_POOL), scopes=scopes)
        sparse = store.keywords.full_text(keywords.extract(task), max(pool, HYBRID_POOL), scopes)
        return _rrf(dense, sparse)[:pool]
    if policy == "random":
        return [(memory_id, 0.0) for memory_id in store.memories.random_ids(pool, seed, scopes)]
    raise MempError(f"unknown recall policy {policy!r}; choose one of {', '.join(POLICIES)}")


def _floored(match: Match, policy: str) -> float:
    """Return what the floor and utility ranking compare: the procedural score, else the tasks' cosine."""
    return match.score if policy == "procedural" else (match.similarity or 0.0)


def confident_floor(embed_id: str) -> float:
    """Return the calibrated --confident similarity floor for an embedding model."""
    if embed_id not in CONFIDENT:
        raise MempError(f"--confident is calibrated for {', '.join(CONFIDENT)} only; pass --min-score for {embed_id}")
    return CONFIDENT[embed_id]


def recall(store: Store, task: str, k: int = 3, policy: str = DEFAULT_POLICY, **options: Any) -> Recall:
    """Return the top-`k` memories for `task`, logged under a new recall id for later outcome reporting.

    Options are those of `recall_many`.
    """
    return recall_many(store, [task], k, policy, **options)[0]


def recall_many(
    store: Store,
    tasks: Sequence[str],
    k: int = 3,
    policy: str = DEFAULT_POLICY,
    min_score: float | None = None,
    max_tokens: int | None = None,
    embed_model: str | None = None,
    seed: int | None = None,
    log: bool = True,
    rank: str = "similarity",
    confident: bool = False,
    keywords_model: str | None = None,
    scopes: Sequence[str] | None = None,
) -> list[Recall]:
    """Return one recall per task, each as `recall` would: the tasks embedded together and logged in one write.

    Only memories of `scopes` are searched (None: every scope; `scopes.read_scopes` resolves what a user asked for).

    `min_score` (and `confident`) filter on `similarity`, the cosine of the two tasks, under every policy but
    `procedural`, whose floor is on its score (a blend of that cosine and the procedure keys' cosine). Without it, the
    policy's calibrated default floor applies (FLOORS); 0 turns the floor off.
    """
    tasks = [task.strip() for task in tasks]
    if not all(tasks):
        raise MempError("the task is empty")
    if k < 1:
        raise MempError("-k must be at least 1")
    if rank not in RANKS:
        raise MempError(f"unknown --rank {rank!r}; choose one of {', '.join(RANKS)}")
    if policy not in POLICIES:
        raise MempError(f"unknown recall policy {policy!r}; choose one of {', '.join(POLICIES)}")
    embed_id = resolve_embed_model(store, embed_model)
    if confident:
        floor = confident_floor(embed_id)
        min_score = floor if min_score is None else max(min_score, floor)
    if min_score is None:
        min_score = FLOORS.get(embed_id, {}).get(policy)
    embedder = get_embedder(None if is_default(embed_id) else embed_id)
    # Twice k at least: failed runs among the best do not take a success's slot, so the next ones must be at hand.
    pool = k * UTILITY_POOL if rank == "utility" else 4 * k
    # Each task is embedded on its own run (int8 activations are quantised per run, so batch-mates would nudge it);
    # many tasks spread those runs over the machine's cores. Searching each as it arrived, beside the embedding
    # threads, measured slower: every numpy call then waited its turn for the GIL.
    if policy == "procedural":
        from . import procedural
        from .procedure_index import index_for

        # Read before the tasks are embedded: the embedded model's session is still being made on another thread.
        index = index_for(store, embedder, embed_id)
    vectors = embedder.embed(tasks)
    if policy == "query":
        all_hits = store.vectors.nearest_many(vectors, pool, scopes)
    elif policy == "procedural":
        ranked = procedural.rank(store, tasks, vectors, embedder, index, procedural.pool_for(k, pool), scopes)
        all_hits = [[(i, score) for i, score, _ in hits] for hits in ranked]
        cosines = [{i: cos for i, _, cos in hits} for hits in ranked]
    else:
        all_hits = [
            candidates(store, task, vector, policy, pool, embedder, seed, keywords_model, scopes)
            for task, vector in zip(tasks, vectors)
        ]
    # The chosen memories read again by id, as they are now: one another process held or retired since this one's
    # indexes and preloaded vectors were read is never served.
    found = {
        m.id: m for m in store.memories.get_many(sorted({i for hits in all_hits for i, _ in hits})) if m.status == "active"
    }
    if scopes is not None:
        # Every policy searched within the scopes already; this keeps a slip in any one of them from leaking.
        found = {i: m for i, m in found.items() if m.scope in scopes}
    results = []
    for n, (task, vector, hits) in enumerate(zip(tasks, vectors, all_hits)):
        hits = [(i, score) for i, score in hits if i in found]
        if policy == "procedural":
            similarity = cosines[n]
        else:
            similarity = dict(hits) if policy == "query" else store.vectors.similarities(vector, [i for i, _ in hits])
        matches = [Match(found[i], score, 0, similarity.get(i, 0.0)) for i, score in hits]
        if min_score is not None:
            matches = [m for m in matches if _floored(m, policy) >= min_score]
        if rank == "utility":
            for match in matches:
                match.score = _floored(match, policy) + UTILITY_WEIGHT * (match.memory.success_mean() - 0.5)
            matches.sort(key=lambda m: m.score, reverse=True)
        if policy == "procedural":
            # After utility, so that a group of near-copies is represented by its most useful member.
            # Every group is kept here: successes and failed runs are told apart after, each to their own k.
            groups = dict(procedural.collapse(store, index, [m.memory.id for m in matches], len(matches)))
            matches = [m for m in matches if m.memory.id in groups]
            for match in matches:
                match.count = groups[match.memory.id]
        # A failed run's memory says what went wrong, not what to do: it never fills a slot a fitting success could
        # take, and those among the best k are handed over apart, as warnings.
        warnings = [m for m in matches[:k] if m.memory.outcome == "failure"]
        matches = _within_budget([m for m in matches if m.memory.outcome != "failure"][:k], max_tokens)
        budget = None if max_tokens is None else max_tokens - sum(m.memory.tokens for m in matches)
        warnings = _within_budget(warnings, budget)
        for position, match in enumerate([*matches, *warnings], 1):
            match.rank = position
        results.append(Recall(new_recall_id(), task, policy, matches, warnings))
    if log:
        from .boundary import redact_text  # a task can hold a secret too, and the log keeps it

        store.log.record_recalls(
            [(r.id, redact_text(r.task), policy, k, [(m.memory.id, m.score) for m in [*r.matches, *r.warnings]])
             for r in results]
        )
    return results
