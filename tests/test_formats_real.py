"""Every real file in ../shared/data ingests with --format auto, with the counts and outcomes its source states."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED

from memp_cli import formats

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason=f"real data folder {SHARED} is absent")


def _detect(path: Path) -> str:
    return formats.detect(formats.Source(path, str(path)))


def test_detection_of_each_real_format() -> None:
    assert _detect(next((SHARED / "alfworld-expert").rglob("gt_traj.json"))) == "sharegpt"
    assert _detect(SHARED / "react-alfworld/alfworld_3prompts.json") == "react"
    assert _detect(SHARED / "react-webshop/WebShop_ipynb_cell7_output.txt") == "react"
    assert _detect(SHARED / "memp-alfworld/alfworld_examples.json") == "memp-chat"
    assert _detect(next((SHARED / "mini-swe-agent/trajs").rglob("*.traj.json"))) == "openai-chat"
    assert {_detect(p) for p in (SHARED / "swe-agent").rglob("*.traj")} == {"swe-agent"}


def test_webshop_log_500_episodes_179_successes() -> None:
    src = SHARED / "react-webshop/WebShop_ipynb_cell7_output.txt"
    runs = list(formats.read(formats.Source(src, "webshop")))
    assert len(runs) == 500
    assert Counter(r.outcome for r in runs) == {"success": 179, "failure": 321}
    # The log's own running average after 500 episodes is 0.63798...; the rewards read here must add up to it.
    assert abs(sum(r.score or 0 for r in runs) / 500 - 0.6379833) < 1e-6
    first = runs[0]
    assert first.task == "i need a long clip-in hair extension which is natural looking, and price lower than 20.00 dollars"
    assert first.steps[0].action == "search[long clip-in hair extension natural looking]"
    assert first.steps[1].thought.startswith("B08H5DCD65 is long clip-in hair extension")
    assert first.steps[-1].action == "click[Buy Now]" and first.score == 0.0
    assert runs[1].source_id == "1" and runs[1].source_line > first.source_line


def test_mini_swe_agent_runs_with_outcomes_file(memp) -> None:
    report = memp.json("ingest", str(SHARED / "mini-swe-agent"), "--build", "trajectory")
    assert report["read"] == report["added"] == 50
    assert report["outcomes"] == {"success": 30, "failure": 20}
    memories = memp.json("list")
    run = next(m for m in memories if m["metadata"].get("instance_id") == "django__django-11138")
    assert run["outcome"] == "failure" and run["metadata"]["repo"] == "django/django"
    assert run["task"].startswith("TIME_ZONE value in DATABASES settings is not used")
    assert "\n> ls -la\n<returncode>0</returncode>" in run["trajectory"]
    assert run["source"]["id"] == "django__django-11138"


def test_swe_agent_demonstrations() -> None:
    runs = [t for p in sorted((SHARED / "swe-agent").rglob("*.traj")) for t in formats.read(formats.Source(p, str(p)))]
    assert len(runs) == 19  # 18 demonstrations plus function_calling_simple.traj, read from its history
    types = Counter(r.metadata.get("task_type") for r in runs)
    assert types["marshmallow-code/marshmallow"] == 8 and types["ctf/crypto"] == 4
    marsh = next(r for r in runs if r.metadata.get("task_type") == "marshmallow-code/marshmallow")
    assert marsh.task.startswith("TimeDelta serialization precision")
    assert "INSTRUCTIONS" not in marsh.task
    simple = next(r for r in runs if r.source_file.endswith("function_calling_simple.traj"))
    assert simple.task.startswith("SyntaxError: invalid syntax") and simple.steps


def test_everything_in_shared_data_ingests(memp) -> None:
    report = memp.json("ingest", str(SHARED), "--build", "trajectory")
    # 3,554 + 36 + 6 + 500 + 50 + 19 runs. Stored once each: 13 ALFWorld expert files repeat another trial, 2
    # SWE-agent replays repeat another replay, and the ReAct prompt act_clean_2 is one of the expert runs.
    assert report["read"] == 3554 + 36 + 6 + 500 + 50 + 19
    assert report["added"] == report["read"] - 16
    assert report["redacted"] >= 1  # a CTF demonstration holds a telnet password
    stored = json.dumps(memp.json("list", "--outcome", "success", "-n", "5000"))
    assert "[REDACTED:password]" in stored
