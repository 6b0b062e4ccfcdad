"""An agent loop with memp, offline end to end: recall before each task, act, report how it went.

    python examples/agent_loop.py [--db PATH]

The agent here is a stand-in that follows the recalled procedure step by step and succeeds when it had a memory
close enough to its task; put your own agent where `act` is. Everything runs offline: the embedded embedding model
and memp's offline distiller (`model="offline"`), against a temporary store unless --db is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from memp_cli import Memp
from memp_cli.records import Recall

EXAMPLES = Path(__file__).resolve().parent / "trajectories"
TASKS = [
    "nginx fails to start after a config change; fix it and restart it",
    "the unit tests of the parser fail after an upgrade; make them pass",
    "put a clean mug on the shelf",
    "translate this poem into French",  # nothing in memory fits: the agent is on its own
]
# The stand-in agent trusts a memory whose task is at least this similar to its own (memp-minilm's calibrated floor).
CONFIDENT = 0.5


def act(task: str, recall: Recall) -> tuple[dict[str, object], bool]:
    """Return a stand-in agent's run in memp's native format (and whether it followed a memory): the best memory's
    steps when one fits the task closely enough, else an attempt from scratch that fails."""
    best = recall.matches[0] if recall.matches else None
    if best is None or (best.similarity or 0.0) < CONFIDENT:
        steps = [{"action": "think about the task from scratch", "observation": "no procedure to follow"}]
        return {"task": task, "steps": steps, "outcome": "failure"}, False
    lines = [line.strip() for line in best.memory.render().splitlines() if line.strip()]
    steps = [{"action": line, "observation": "done"} for line in lines[:6]]
    return {"task": task, "steps": steps, "outcome": "success"}, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="store file (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memp-agent-") as tmp:
        db = args.db or Path(tmp) / "agent.db"
        with Memp(db, model="offline") as mem:
            learned = mem.ingest(str(EXAMPLES))
            print(json.dumps({"learned": learned.added}))
            for task in TASKS:
                recall = mem.recall(task, k=2)
                prompt = mem.prompt(recall)  # what a real agent would put in its context
                run, followed = act(task, recall)
                line = {"task": task, "recall_id": recall.id, "prompt_chars": len(prompt), "outcome": run["outcome"]}
                if followed:
                    # Credit (or blame) what recall gave; under "validation" a successful run becomes a memory too.
                    report = mem.update(recall.id, outcome=str(run["outcome"]), trajectory=run, policy="validation")
                    line.update(credited=report.credited, added=report.added)
                # A run that followed no memory blames none: there is nothing to report against.
                print(json.dumps(line))
            print(json.dumps({"memories": len(mem.list(status="active"))}))


if __name__ == "__main__":
    main()
