"""`memp recall -` with JSON lines: each line's own k and policy, in order, and a bad line named by its number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES


@pytest.fixture
def db(memp, tmp_path: Path) -> Path:
    path = tmp_path / "lines.db"
    memp("ingest", str(EXAMPLES), "--db", str(path), "-m", "offline")
    return path


def recall_lines(db: Path, feed: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Return `memp recall -` run on a real pipe with `feed` on stdin."""
    return subprocess.run([sys.executable, "-m", "memp_cli", "recall", "-", "-k", "1", "--db", str(db), *args],
                          input=feed, capture_output=True, text=True, timeout=120, check=False)


def test_json_lines_and_plain_lines_are_answered_in_order(db: Path) -> None:
    feed = "\n".join([
        json.dumps({"task": "renew an expiring certificate", "k": 3}),
        "cool a lettuce and put it in the cabinet",
        json.dumps({"task": "fix a bug in the python code", "policy": "hybrid", "k": 2}),
        json.dumps({"task": "restart nginx"}),
    ]) + "\n"
    # No floor and query by default here, so that each line's own k shows in full.
    done = recall_lines(db, feed, "--min-score", "0", "-p", "query")
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["task"] for a in answers] == [
        "renew an expiring certificate", "cool a lettuce and put it in the cabinet", "fix a bug in the python code",
        "restart nginx",
    ]
    assert [len(a["matches"] + a["warnings"]) for a in answers] == [3, 1, 2, 1]
    assert [a["policy"] for a in answers] == ["query", "query", "hybrid", "query"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"task": "restart nginx", ', "not a JSON object"),
        ('{"task": "restart nginx", "top": 2}', "unknown keys top"),
        ('{"task": "restart nginx", "k": 0}', '"k" must be a whole number'),
        ('{"task": "restart nginx", "policy": "best"}', '"policy" must be one of'),
        ('{"k": 2}', '"task" must be a non-empty string'),
    ],
)
def test_a_bad_json_line_stops_after_answering_the_lines_before_it(db: Path, bad: str, message: str) -> None:
    feed = "renew an expiring certificate\n\n" + json.dumps({"task": "restart nginx"}) + "\n" + bad + "\nlast one\n"
    done = recall_lines(db, feed)
    assert done.returncode == 1
    assert [json.loads(line)["task"] for line in done.stdout.splitlines()] == [
        "renew an expiring certificate", "restart nginx"
    ]
    # Blank lines count: the bad line is the fourth of stdin.
    assert done.stderr.strip().splitlines()[-1].startswith(f"memp: error: stdin:4: {message}")
