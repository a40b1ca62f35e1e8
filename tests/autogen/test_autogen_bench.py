"""Smoke test of bench/autogen_overhead.py: it runs end to end and its rows are sane (no timing asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import autogen_overhead  # noqa: E402


def test_overhead_bench_rows(capsys):
    rows = autogen_overhead.main(["--quick", "--json", "--repeats", "2"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [r["table"] for r in printed] == ["machine"] + ["autogen_overhead"] * 4
    assert [(r["tools"], r["messages"]) for r in rows] == [(False, 4), (False, 16), (True, 4), (True, 16)]
    for row in rows:
        assert row["unwrapped_s"] > 0 and row["wrapped_s"] > 0 and row["repeats"] == 2
        assert row["ratio"] > 0 and row["median_paired_ratio"] > 0
    nodes = {(r["tools"], r["messages"]): r["graph_nodes"] for r in rows}
    assert nodes[(False, 16)] > nodes[(False, 4)] and nodes[(True, 4)] > nodes[(False, 4)]
