"""Which memories to retire and why: pure policy over usage statistics, duplicates, age and capacity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .records import Memory

if TYPE_CHECKING:
    from .store import Store


@dataclass
class Rules:
    """The prune rules; each is off when its setting is None or False."""

    # The Mem^p paper's discard preset: recalled at least `min_recalls` times and a success rate under `max_rate`.
    discard: bool = True
    min_recalls: int = 3
    max_rate: float = 0.5
    # Statistical: retire when the 95% Wilson upper bound of the success rate is below this.
    confident_below: float | None = None
    stale_days: int | None = None
    dedupe: float | None = None
    # Duplicates must also follow the same procedure: the similarity of their step kinds in order (fidelity's
    # type_edit; 1.0 is the same kinds of steps in the same order). Tasks alone merged "heat some apple" into
    # "clean some apple" (task cosine 0.951).
    dedupe_procedure: float = 0.9
    max_memories: int | None = None


@dataclass
class Retirement:
    """One line of the plan."""

    memory_id: int
    task: str
    rule: str
    reason: str
    merge_into: int | None = None
    task_similarity: float | None = None
    procedure_similarity: float | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the line as a JSON-ready dict."""
        return asdict(self)


def procedure_similarity(a: Memory, b: Memory) -> float:
    """Return how alike two memories' procedures are, 1.0 when they take the same kinds of steps in the same order.

    The lower of two figures: the Jaccard overlap of the kinds of steps each takes (a "heat" step where the other
    has "clean" tells two procedures apart however alike the tasks read), and the edit similarity of the two
    sequences of kinds (picking up two objects one after the other is not picking up one).
    """
    from .fidelity import action_type, memory_steps, sequence_similarity

    kinds_a = [action_type(s) for s in memory_steps(a.script, a.trajectory)]
    kinds_b = [action_type(s) for s in memory_steps(b.script, b.trajectory)]
    union = set(kinds_a) | set(kinds_b)
    jaccard = len(set(kinds_a) & set(kinds_b)) / len(union) if union else 1.0
    return min(jaccard, sequence_similarity(kinds_a, kinds_b))


def usefulness(memory: Memory) -> tuple[float, int, str]:
    """Return a sort key: higher is more worth keeping (success estimate, then use, then recency)."""
    return (memory.success_mean(), memory.recalled, memory.created_at)


def _age_days(memory: Memory, now: datetime) -> float:
    stamp = datetime.fromisoformat(memory.last_recalled_at or memory.created_at)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (now - stamp) / timedelta(days=1)


def plan(
    memories: Sequence[Memory],
    rules: Rules,
    neighbours: Callable[[Memory], list[tuple[int, float]]] | None = None,
    now: datetime | None = None,
) -> list[Retirement]:
    """Return the retirements the rules call for, each memory at most once, with a reason for each."""
    now = now or datetime.now(timezone.utc)
    active = [m for m in memories if m.status == "active"]
    out: dict[int, Retirement] = {}

    def retire(m: Memory, rule: str, reason: str, into: int | None = None,
               scores: tuple[float | None, float | None] = (None, None)) -> None:
        if m.id not in out:
            out[m.id] = Retirement(m.id, m.task, rule, reason, into, *scores)

    for m in active:
        uses = m.succeeded + m.failed
        if rules.discard and m.recalled >= rules.min_recalls and uses and m.succeeded / uses < rules.max_rate:
            retire(m, "discard", f"recalled {m.recalled} times, succeeded {m.succeeded} of {uses} (< {rules.max_rate:g})")
            continue
        if rules.confident_below is not None and uses:
            upper = m.success_bounds()[1]
            if upper < rules.confident_below:
                retire(m, "bound", f"success rate below {rules.confident_below:g} with 95% confidence (upper {upper:.2f})")
                continue
        if rules.stale_days is not None:
            age = _age_days(m, now)
            if age > rules.stale_days:
                what = "recalled" if m.last_recalled_at else "recalled since it was built"
                retire(m, "stale", f"not {what} for {age:.0f} days (> {rules.stale_days})")

    if rules.dedupe is not None and neighbours is not None:
        by_id = {m.id: m for m in active}
        kept: set[int] = set()
        for m in sorted(active, key=usefulness, reverse=True):
            if m.id in out:
                continue
            kept.add(m.id)
            for other_id, similarity in neighbours(m):
                other = by_id.get(other_id)
                # A memory that already absorbed others stays: merges never chain or cycle.
                if other is None or other.id == m.id or other.id in out or other.id in kept:
                    continue
                # Nor across scopes: a duplicate in another team's scope is theirs to keep.
                if similarity < rules.dedupe or other.outcome != m.outcome or other.scope != m.scope:
                    continue
                same = procedure_similarity(m, other)
                if same < rules.dedupe_procedure:
                    continue
                retire(other, "duplicate", f"task and procedure duplicate memory {m.id} (task cosine "
                       f"{similarity:.3f}, procedure {same:.2f}); merged", m.id, (similarity, same))

    if rules.max_memories is not None:
        ranked = sorted((m for m in active if m.id not in out), key=usefulness, reverse=True)
        for m in ranked[rules.max_memories :]:
            retire(m, "capacity", f"over the cap of {rules.max_memories} memories, least useful first")
    return list(out.values())


def plan_store(
    store: Store, rules: Rules, apply: bool = False, scopes: Sequence[str] | None = None
) -> tuple[list[Retirement], int]:
    """Return the plan for the active memories of `scopes` (None: all) and how many there are; carry it out on `apply`.

    A memory's duplicates are looked for in its own scope only. Applied, the plan is made and carried out in one
    write transaction: the memories it decides on are read under the write lock, so prunes running at once each plan
    from what the one before left (a second prune finds nothing left to merge) and no merge goes into a memory
    another process has retired.
    """
    if not apply:
        return _plan_now(store, rules, scopes)
    with store.write():
        retirements, active = _plan_now(store, rules, scopes)
        for r in retirements:
            store.memories.retire(r.memory_id, f"{r.rule}: {r.reason}", r.merge_into)
    return retirements, active


def _plan_now(store: Store, rules: Rules, scopes: Sequence[str] | None) -> tuple[list[Retirement], int]:
    """Return the plan for the active memories of `scopes` and how many there are."""
    memories = store.memories.list(status="active", scopes=scopes)
    nearest = lambda m: store.vectors.nearest(store.vectors.vector(m.id), 10, scopes=[m.scope])
    return plan(memories, rules, nearest), len(memories)
