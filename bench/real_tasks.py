"""Real task texts from `../shared/data` (ALFWorld expert runs and WebShop instructions), for benches and tests.

The folder is outside the project (never copied into it); callers skip with a reason when it is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_ALFWORLD_TASK = re.compile(r"Your task is to: (.+?)\s*$", re.DOTALL)


def available() -> bool:
    """Return True when the shared data folder holds the ALFWorld expert runs and the WebShop log."""
    return (DATA / "alfworld-expert" / "train").is_dir() and (DATA / "react-webshop").is_dir()


def real_tasks() -> list[str]:
    """Return the distinct task texts of the ALFWorld expert runs and the WebShop episodes, in file order."""
    tasks: dict[str, None] = {}
    for path in sorted((DATA / "alfworld-expert" / "train").glob("*/*/gt_traj.json")):
        first = json.loads(path.read_text())[0]["value"]
        if match := _ALFWORLD_TASK.search(first):
            tasks.setdefault(match.group(1).strip().rstrip("."))
    lines = (DATA / "react-webshop" / "WebShop_ipynb_cell7_output.txt").read_text().splitlines()
    for n, line in enumerate(lines[:-1]):
        if line.startswith("Instruction:") and lines[n + 1].strip():
            tasks.setdefault(lines[n + 1].strip())
    return list(tasks)
