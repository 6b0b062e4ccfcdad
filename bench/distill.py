"""LLM distillation throughput: `memp ingest` with a chat model of fixed latency, at several --jobs.

    python bench/distill.py [--latency 1.0] [--jobs 1 4 8] [--per-job 8] [--data ../shared/data] [--format text|json]

The model is a fake registered through llm's plugin manager (as tests/conftest.py's FakeChat is): it sleeps
`--latency` seconds, then answers a procedure made from the run's task. Each --jobs value ingests `--per-job` × jobs
real ALFWorld runs (from --data; small made-up runs when it is absent) into a fresh store and reports trajectories/s
over the whole ingest (reading, embedding and storing included), and how many calls the model saw at once.
The issue's target: >= 8 trajectories/s with --jobs 8 at 1 s latency, which is also the ceiling (8 calls at once,
1 s each): what stays below it is memp's own time (embedding, storing, the procedure index), not spent waiting.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llm

from memp_cli import formats
from memp_cli.embed import get_embedder
from memp_cli.ingest import IngestOptions, ingest_runs
from memp_cli.records import Step, Trajectory
from memp_cli.store import open_store

TASK = re.compile(r"^Task: (.*)$", re.MULTILINE)


class FixedLatency(llm.Model):
    """Answers every prompt with a procedure after `latency` seconds; counts the calls running at once."""

    model_id = "fixed-latency"
    supports_schema = True

    def __init__(self) -> None:
        self.latency = 1.0
        self.running = self.most = self.calls = 0
        self._lock = threading.Lock()

    def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def,unused-ignore]
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.latency)
        finally:
            with self._lock:
                self.running -= 1
        found = TASK.search(prompt.prompt)
        task = found.group(1) if found else "the task"
        yield json.dumps({"when_to_use": f"tasks like {task}", "parameters": [], "steps": [f"do {task}"],
                          "pitfalls": []})


class Plugin:
    __name__ = "FixedLatencyPlugin"

    def __init__(self, model: FixedLatency) -> None:
        self.model = model

    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(self.model)


def runs(data: Path, n: int) -> list[Trajectory]:
    """Return `n` distinct runs: ALFWorld expert runs from `data`, else made-up ones."""
    folder = data / "alfworld-expert"
    found: dict[str, Trajectory] = {}
    if folder.is_dir():
        with formats.sources([str(folder)]) as (sources, _):
            for src in sources:
                for traj in formats.read(src, "auto", formats.ReadOptions()):
                    found.setdefault(traj.id, traj)
                if len(found) >= n:
                    return list(found.values())[:n]
    made = [Trajectory(task=f"repair the printer on floor {i}", steps=[Step(f"go to floor {i}", "You arrive."),
                                                                       Step("fix printer", "Fixed.")],
                       outcome="success") for i in range(n)]
    return [*found.values(), *made][:n]


def measure(model: FixedLatency, jobs: int, trajectories: list[Trajectory]) -> dict[str, Any]:
    """Return the throughput of one ingest of `trajectories` with `jobs` model calls at once."""
    model.running = model.most = model.calls = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        start = time.perf_counter()
        report = ingest_runs(store, trajectories, IngestOptions(model=model.model_id, jobs=jobs),
                             warn=lambda msg: print(f"memp: {msg}", file=sys.stderr))
        seconds = time.perf_counter() - start
        store.close()
    return {"jobs": jobs, "trajectories": report.added, "seconds": round(seconds, 2),
            "trajectories_per_s": round(report.added / seconds, 2), "model_calls": model.calls,
            "most_calls_at_once": model.most, "offline_scripts": report.offline_scripts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the fake model takes per answer")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--per-job", type=int, default=8, help="runs ingested per job (jobs 8: 64 runs)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args()
    model = FixedLatency()
    model.latency = args.latency
    llm.plugins.pm.register(Plugin(model), name="fixed-latency-plugin")
    pool = runs(args.data, args.per_job * max(args.jobs))
    # One untimed ingest first (no latency), so the first --jobs value is not charged for loading the embedded
    # model, tiktoken's tables and the offline distiller.
    model.latency = 0
    get_embedder(None).embed(["warm up"])
    measure(model, 1, pool[:2])
    model.latency = args.latency
    rows = [measure(model, jobs, pool[: args.per_job * jobs]) for jobs in args.jobs]
    if args.format == "json":
        print(json.dumps({"latency_s": args.latency, "rows": rows}, indent=2))
        return
    print(f"LLM distillation, fake model answering in {args.latency:g} s")
    print(f"{'jobs':>4} {'runs':>5} {'seconds':>8} {'traj/s':>7} {'calls':>6} {'at once':>8}")
    for r in rows:
        print(f"{r['jobs']:>4} {r['trajectories']:>5} {r['seconds']:>8} {r['trajectories_per_s']:>7} "
              f"{r['model_calls']:>6} {r['most_calls_at_once']:>8}")


if __name__ == "__main__":
    main()
