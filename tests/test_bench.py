"""The benchmark script runs and reports what it promises (numbers are printed by it, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_on_a_small_store(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench/run.py"), "--sizes", "300", "--runs", "3", "--batch", "20",
           "--ingest", "40", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env={
        **__import__("os").environ, "MEMP_CACHE": str(tmp_path / "cache"), "LLM_USER_PATH": str(tmp_path / "llm"),
    })
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    (row,) = result["sizes"]
    assert row["size"] == 300 and result["ingest"]["trajectories"] == 40
    # An editable install (the README's test command makes one) costs every fresh process: the bench says so.
    assert result["memp_install"] in ("editable", "regular")
    assert ("editable install" in done.stderr) == (result["memp_install"] == "editable")
    assert row["search"]["default"]["recall_at_5"] == 1.0  # below the threshold memp scans exactly
    assert 0 < row["search"]["binary"]["recall_at_5"] <= 1
    assert row["llm_similar"]["fresh_process_ms_median"] > 0 and row["speedup_in_process"] > 0
    for key in ("recall_fresh_ms_median", "recall_fresh_ms_p95", "recall_peak_rss_mb", "batch_recall_qps",
                "store_bytes_per_memory"):
        assert row[key] > 0


def test_bench_search_only_times_the_search_alone(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench/run.py"), "--sizes", "200", "--runs", "2", "--search-only"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env={
        **__import__("os").environ, "MEMP_CACHE": str(tmp_path / "cache"), "LLM_USER_PATH": str(tmp_path / "llm"),
    })
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)["sizes"]
    assert row["size"] == 200 and row["store_bytes_per_memory"] > 0
    assert {name: row["search"][name]["recall_at_5"] for name in ("default", "binary", "exact")} == {
        "default": 1.0, "binary": 1.0, "exact": 1.0,  # 200 memories: the bit pass rescores them all
    }
