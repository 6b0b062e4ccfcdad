"""Offline scripts over the real runs in ../shared/data: where household steps act, before and after memp_cli.offline.

    python bench/offline_scripts.py [--data ../shared/data] [--show 2] [--format text|json]

For every ALFWorld run (the 3,554 expert runs, the ReAct prompts, the Mem^p examples) it counts scripts with a step
that takes, puts, cleans, heats, cools, opens or uses somewhere other than where the last `go to` (or find step)
led, by task type: "before" is the offline distiller as it was before memp_cli/offline (kept below as the baseline),
"after" is memp's. For every source it counts failed runs whose script still has Steps, and the steps a script has.
`--show N` prints N scripts from each source, to read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memp_cli import formats
from memp_cli.distill import Procedure
from memp_cli.offline import offline_procedure, place_violations
from memp_cli.offline.judge import domain_of
from memp_cli.offline.steps import Domain
from memp_cli.records import Step, Trajectory

# -- the baseline: the offline distiller of memp_cli/distill.py before memp_cli/offline (commit cc2113a) -------------

OLD_FAILURE = re.compile(
    r"^\s*(?:nothing happens|error\b|traceback \(most recent|usage:)|command not found|no such file or directory|"
    r"permission denied|<returncode>\s*[1-9]|exit (?:code|status):? [1-9]",
    re.IGNORECASE,
)
OLD_STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "from", "with", "into", "onto", "by", "is",
    "are", "be", "it", "its", "this", "that", "some", "any", "your", "you", "then", "put", "place", "find", "get",
    "make", "use", "using", "all", "two", "one", "them", "their", "there", "here", "up", "out", "off",
})


def baseline_procedure(traj: Trajectory) -> Procedure:
    """Return the script the offline distiller wrote before memp_cli/offline: successful, non-repeated actions."""
    kept: list[str] = []
    failed: list[Step] = []
    for step in traj.steps:
        action = step.action.strip()
        if not action or action.lower().startswith("think:"):
            continue
        if OLD_FAILURE.search((step.observation or "").strip().split("\n", 1)[0]):
            failed.append(step)
        elif action not in kept:
            kept.append(action)
    words = re.findall(r"[A-Za-z][A-Za-z0-9_\-]*", traj.task.lower())
    params = [w for w in dict.fromkeys(words) if len(w) > 2 and w not in OLD_STOPWORDS]
    params = [w for w in params if any(
        re.search(rf"\b{re.escape(w)}\s+\d+\b", a, re.IGNORECASE) or re.search(rf"[/.\-_=:]{re.escape(w)}\b|\b{re.escape(w)}[/.\-_=:]", a, re.IGNORECASE)
        for a in kept)]

    def parameterise(action: str) -> str:
        for p in params:
            action = re.sub(rf"(?<![\w{{]){re.escape(p)}(?![\w}}])", "{" + p + "}", action, flags=re.IGNORECASE)
        return action

    steps = [parameterise(a) for a in kept[:30]] + ([f"... ({len(kept) - 30} more steps)"] if len(kept) > 30 else [])
    pitfalls = [f"`{s.action.strip()}` did not work: {' '.join((s.observation or '').split())[:120]}" for s in failed[:3]]
    if traj.outcome == "failure":
        pitfalls.append("This run failed overall: check each step's result instead of repeating it as is.")
    return Procedure(f"Tasks like: {traj.task}", [f"{{{p}}} (example: {p})" for p in params],
                     steps or ["(no action in the run succeeded)"], pitfalls)


# -- the real data -------------------------------------------------------------------------------------------------


def sources(data: Path) -> dict[str, list[Path]]:
    """Return source name -> its trajectory files under `data` and the project's own examples."""
    return {
        "alfworld-expert": sorted((data / "alfworld-expert").rglob("gt_traj.json")),
        "react-alfworld": [data / "react-alfworld/alfworld_3prompts.json"],
        "memp-alfworld": [data / "memp-alfworld/alfworld_examples.json"],
        "react-webshop": [data / "react-webshop/WebShop_ipynb_cell7_output.txt"],
        "mini-swe-agent": sorted((data / "mini-swe-agent/trajs").rglob("*.traj.json")),
        "swe-agent": sorted((data / "swe-agent").rglob("*.traj")),
        "examples": sorted((ROOT / "examples/trajectories").glob("*.jsonl")),
    }


def runs(files: list[Path]) -> Iterator[Trajectory]:
    """Yield the trajectories in the files, outcomes settled by an outcomes.json beside or above them."""
    options = formats.ReadOptions()
    for folder in {f.parent.parent.parent for f in files if f.name.endswith(".traj.json")}:
        table = folder / "outcomes.json"
        if table.exists():
            options.outcomes.update(formats.read_outcomes(formats.Source(table, str(table))))
    for f in files:
        yield from formats.read(formats.Source(f, str(f)), options=options)


def measure(trajs: list[Trajectory], distill: Callable[[Trajectory], Procedure]) -> dict:
    """Return counts for one source under one distiller: violations by task type, failed runs with steps, sizes."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    started = time.perf_counter()
    texts = []
    for traj in trajs:
        text = distill(traj).render()
        texts.append(text)
        row = by_type[str(traj.metadata.get("task_type") or "-")]
        row["scripts"] += 1
        row["steps"] += len(re.findall(r"^\d+\. ", text.split("\nSteps:\n", 1)[-1], re.MULTILINE)) if "\nSteps:\n" in text else 0
        if traj.outcome == "failure":
            row["failed_runs"] += 1
            row["failed_with_steps"] += "\nSteps:\n" in text
        if domain_of(traj) is Domain.HOUSEHOLD:
            row["place_violations"] += bool(place_violations(text))
    return {"by_type": {k: dict(v) for k, v in sorted(by_type.items())},
            "ms_per_script": round(1000 * (time.perf_counter() - started) / max(1, len(trajs)), 3), "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--show", type=int, default=0, help="print this many scripts from each source")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"skipped: {data} is absent")
    report: dict[str, dict] = {}
    for name, files in sources(data).items():
        trajs = list(runs(files))
        before, after = measure(trajs, baseline_procedure), measure(trajs, offline_procedure)
        for i in range(min(args.show, len(trajs))):
            pick = trajs[i * len(trajs) // args.show]
            print(f"--- {name}: {pick.source_file} ({pick.outcome})\n{offline_procedure(pick).render()}\n", file=sys.stderr)
        report[name] = {"runs": len(trajs), "before": before, "after": after}
    if args.format == "json":
        for entry in report.values():
            entry["before"].pop("texts")
            entry["after"].pop("texts")
        print(json.dumps(report, indent=2))
        return
    print(f"{'source / task type':<44} {'runs':>5} {'violations before':>18} {'after':>6} "
          f"{'failed w/ steps before':>23} {'after':>6} {'steps/script before':>20} {'after':>6}")
    for name, entry in report.items():
        for task_type, b in entry["before"]["by_type"].items():
            a = entry["after"]["by_type"][task_type]
            print(f"{(name + ' / ' + task_type)[:44]:<44} {b['scripts']:>5} {b.get('place_violations', '-'):>18} "
                  f"{a.get('place_violations', '-'):>6} {b.get('failed_with_steps', 0):>23} "
                  f"{a.get('failed_with_steps', 0):>6} {b['steps'] / b['scripts']:>20.1f} {a['steps'] / a['scripts']:>6.1f}")
        print(f"{'':<44} ms per script: before {entry['before']['ms_per_script']}, after {entry['after']['ms_per_script']}")


if __name__ == "__main__":
    main()
