"""bench/executor_scaling.py runs end to end (tiny sizes, no timing asserted): same results under each executor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_executor_scaling_bench_runs_and_compares_results():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.executor_scaling",
            "--json",
            "--latency",
            "0.01",
            "--rounds",
            "2",
            "--concurrency",
            "1",
            "8",
            "--executors",
            "threads",
            "asyncio",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    runs = [r for r in rows if "executor" in r]
    [summary] = [r["summary"] for r in rows if "summary" in r]
    assert [(r["executor"], r["concurrency"], r["examples"]) for r in runs] == [
        ("threads", 1, 2),
        ("threads", 8, 16),
        ("asyncio", 1, 2),
        ("asyncio", 8, 16),
    ]
    assert all(r["failed"] == 0 and r["fraction"] > 0 and r["peak_mb"] > 0 for r in runs)
    assert summary["identical_results"] is True and set(summary["added_ms_per_eval"]) == {"threads", "asyncio"}
