"""Smoke tests of the bench scripts: with tiny N they run end to end and produce sane rows.

No timing is asserted (timings belong in the bench output, not in tests); what is asserted is
that every row is produced, that the prompt checks really check, and that the loop benchmark
talks to its HTTP server as often as it says.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import core_scaling, loop_overhead  # noqa: E402
from opto_core import Feedback, backward, render  # noqa: E402


def _json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_core_scaling_rows_for_every_shape(capsys):
    rows = core_scaling.main(["--sizes", "10,30", "--no-trace-opt", "--no-import", "--json"])
    printed = _json_rows(capsys.readouterr().out)
    assert [r["table"] for r in printed].count("core_scaling") == len(rows) == 8
    assert {(r["shape"], r["n"]) for r in rows} == {(s, n) for s in core_scaling.SHAPES for n in (10, 30)}
    for row in rows:
        assert row["build_s"] > 0 and row["backward_s"] > 0 and row["render_s"] > 0
        assert row["peak_bytes"] > 0 and row["tokens"] > 0
        assert row["within_budget"] and row["all_variables"] and row["has_feedback"]
        assert row["has_exception"] is (True if row["shape"] == "agent-turns" else None)
    # the graphs grow with N: the 30-step chain has more nodes than the 10-step one
    chain = {r["n"]: r["nodes"] for r in rows if r["shape"] == "add-chain"}
    assert chain[30] > chain[10]
    assert any(r["table"] == "growth" for r in printed)


def test_core_scaling_reports_a_prompt_over_its_budget(capsys):
    rows = core_scaling.main(
        ["--sizes", "60", "--shapes", "fan-in", "--budget", "200", "--no-trace-opt", "--no-import", "--json"]
    )
    (row,) = rows
    assert row["tokens"] > 200 and row["within_budget"] is False
    assert row["all_variables"]  # variables are never cut, which is why the budget is exceeded


def test_check_prompt_finds_a_missing_variable_feedback_and_exception():
    graph, feedback, expect = core_scaling.build_agent_turns(5)
    text = render(backward(graph, feedback), 8000)
    assert core_scaling.check_prompt(text, 8000, feedback, expect)["all_variables"]
    without = text.replace(") system_prompt=", ") something_else=")
    checked = core_scaling.check_prompt(without, 8000, feedback, expect)
    assert not checked["all_variables"] and checked["missing_variables"] == 1
    other = Feedback(0.0, "a feedback that is not in the prompt")
    assert not core_scaling.check_prompt(text, 8000, other, expect)["has_feedback"]
    no_exception = text.replace(expect["exception"], "")
    assert core_scaling.check_prompt(no_exception, 8000, feedback, expect)["has_exception"] is False


def test_core_scaling_prints_tables(capsys):
    core_scaling.main(["--sizes", "10", "--shapes", "add-chain", "--no-trace-opt", "--no-import"])
    out = capsys.readouterr().out
    assert "| shape" in out and "| add-chain" in out


@pytest.mark.skipif(importlib.util.find_spec("opto") is None, reason="trace-opt (bench extra) not installed")
def test_traceopt_cases_run_in_subprocesses():
    # each subprocess pays trace-opt's import (5-10 s), so: one per-case run (full mode's path) and
    # one batch (--quick's path) with the shape that goes through trace-opt's ExecutionError
    timed = core_scaling.run_traceopt("add-chain", 8, memory=False, limit=120)
    assert "skipped" not in timed, timed
    assert timed["backward_s"] > 0 and timed["prompt_s"] > 0 and timed["tokens"] > 0
    batch = core_scaling.run_traceopt_batch([("agent-turns", 3), ("agent-turns", 9)], limit=120)
    small, large = batch[("agent-turns", 3)], batch[("agent-turns", 9)]
    assert "skipped" not in small, small
    assert small["peak_bytes"] > 0 and large["tokens"] > small["tokens"]  # 400-character replies each turn


def test_loop_overhead_counts_every_call(capsys):
    rows = loop_overhead.main(["--threads", "1,2", "--steps", "1", "--batch", "4", "--latency", "0.005", "--json"])
    printed = _json_rows(capsys.readouterr().out)
    assert [r["num_threads"] for r in rows] == [1, 2]
    assert [r["table"] for r in printed] == ["machine", "loop_overhead", "loop_overhead"]
    for row in rows:
        # initial evaluation + (batch, re-evaluation after the accepted change) per step, and the training
        # set re-scored with the best values at the end (there is no validation set)
        assert row["examples"] == row["worker_calls"] == 3 * 4 + 4
        assert row["optimizer_calls"] == row["steps"] == 1 and row["proposals_accepted"] == 1
        assert row["examples_per_s"] > 0 and row["raw_client_per_s"] > 0 and row["step_s"] > 0


def test_loop_overhead_with_the_server_in_a_child_process():
    rows = loop_overhead.main(
        ["--threads", "2", "--steps", "1", "--batch", "2", "--latency", "0.005", "--server-process", "--json"]
    )
    (row,) = rows
    assert row["server"] == "child process" and row["worker_calls"] == row["examples"] == 6 + 2  # + the re-score
