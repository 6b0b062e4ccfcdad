"""`memp eval`: retrieval measured on the user's own labelled trajectories, every policy side by side."""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import fidelity, formats
from .errors import MempError
from .fidelity import Fidelity
from .ingest import IngestOptions, store_trajectories
from .recall import POLICIES, recall
from .records import Memory, Trajectory
from .store import open_store


@dataclass
class PolicyScore:
    """How one policy did on the test tasks."""

    policy: str
    hit_at_1: float
    hit_at_k: float
    mrr: float
    k: int
    tests: int
    tokens_per_recall: float
    latency_ms_median: float
    latency_ms_p95: float
    # Fidelity (memp_cli/fidelity.py) of the top procedure, fitted to the task, against the successful test run's
    # own actions; 0 when nothing was recalled for it. Means over the successful test runs.
    fidelity_type_f1: float = 0.0
    fidelity_type_edit: float = 0.0
    fidelity_action_f1: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-ready dict."""
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}


def _fidelity(memory: Memory | None, run: Trajectory, reference: list[str]) -> Fidelity:
    """Return how closely the recalled procedure, fitted to the run's task, follows what the run needed."""
    if memory is None:
        return Fidelity(0.0, 0.0, 0.0)
    steps = fidelity.fit(fidelity.memory_steps(memory.script, memory.trajectory), memory.task, run.task,
                         fidelity.parameters(memory.script))
    return fidelity.score(steps, reference, run.task)


def label_of(metadata: dict[str, Any], outcome: str | None, label: str) -> Any:
    """Return a run's label: a metadata field, or its outcome when the label is "outcome"."""
    return outcome if label == "outcome" else metadata.get(label)


def _is_test(key: str, share: float) -> bool:
    """Return True for the share of keys that go to the test side (stable across runs and machines)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def split(runs: Sequence[Trajectory], group: str | None, share: float) -> tuple[list[Trajectory], list[Trajectory]]:
    """Return (train, test): whole groups (by `group` metadata, else by task text) fall on one side only."""
    train: list[Trajectory] = []
    test: list[Trajectory] = []
    for run in runs:
        key = str(run.metadata.get(group)) if group else run.task.strip().lower()
        (test if _is_test(key, share) else train).append(run)
    return train, test


def evaluate(
    paths: Sequence[str],
    label: str,
    k: int = 5,
    policies: Sequence[str] = POLICIES,
    test_share: float = 0.2,
    group: str | None = None,
    fmt: str = "auto",
    max_test: int | None = None,
    build: str = "proceduralization",
    embed_model: str | None = None,
    keywords_model: str | None = None,
) -> dict[str, Any]:
    """Return the split's sizes and one PolicyScore per policy."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise MempError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    if not 0 < test_share < 1:
        raise MempError("--test-share must be between 0 and 1")
    with formats.sources(paths) as (found, outcome_files):
        options = formats.ReadOptions()
        for src in outcome_files:
            options.outcomes.update(formats.read_outcomes(src))
        runs = [t for src in found for t in formats.read(src, fmt, options)]
    labelled = [r for r in runs if label_of(r.metadata, r.outcome, label) is not None]
    if not labelled:
        raise MempError(f"no trajectory has the label {label!r} in its metadata")
    train, test = split(labelled, group, test_share)
    test = test[:max_test] if max_test else test
    if not train or not test:
        raise MempError(f"the split left {len(train)} to learn from and {len(test)} to test; add data or change --test-share")
    with tempfile.TemporaryDirectory(prefix="memp-eval-") as tmp:
        store = open_store(Path(tmp) / "eval.db")
        store_trajectories(store, train, IngestOptions(build=build, model="offline", embed_model=embed_model, redact=False))
        rows = []
        # What each successful test run needed: the same for every policy, so judged once.
        references = [fidelity.reference_steps(run) if run.outcome == "success" else [] for run in test]
        for policy in policies:
            hits1 = hitsk = 0
            reciprocal, tokens, latencies = 0.0, [], []
            guided: list[Fidelity] = []
            for i, run in enumerate(test):
                started = time.perf_counter()
                result = recall(
                    store, run.task, k, policy, embed_model=embed_model, seed=i, log=False, min_score=0.0,
                    keywords_model=keywords_model,
                )
                latencies.append(1000 * (time.perf_counter() - started))
                want = label_of(run.metadata, run.outcome, label)
                # Retrieval is judged on its own ranking, before failed runs are set apart as warnings.
                shown = sorted([*result.matches, *result.warnings], key=lambda m: -m.score)
                labels = [label_of(m.memory.metadata, m.memory.outcome, label) for m in shown]
                hits1 += labels[:1] == [want]
                hitsk += want in labels
                reciprocal += 1 / (labels.index(want) + 1) if want in labels else 0.0
                tokens.append(sum(m.memory.tokens for m in [*result.matches, *result.warnings]))
                if run.outcome == "success":
                    guided.append(_fidelity(result.matches[0].memory if result.matches else None, run, references[i]))
            latencies.sort()
            n = len(test)
            rows.append(
                PolicyScore(
                    policy, hits1 / n, hitsk / n, reciprocal / n, k, n, statistics.fmean(tokens),
                    statistics.median(latencies), latencies[min(n - 1, int(0.95 * n))],
                    *(statistics.fmean(getattr(f, name) for f in guided) if guided else 0.0
                      for name in ("type_f1", "type_edit", "action_f1")),
                )
            )
        store.close()
    return {
        "label": label,
        "labels": len({label_of(r.metadata, r.outcome, label) for r in labelled}),
        "train": len(train),
        "test": len(test),
        "unlabelled": len(runs) - len(labelled),
        "policies": [r.to_dict() for r in rows],
    }
