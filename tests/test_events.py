"""A run reports itself: typed events through optimize(..., on_event=...), and the display progress=True uses."""

from __future__ import annotations

import io
import json
import logging

import pytest
from executor_scenarios import TRAIN, VAL, scale_target
from executor_scenarios import scale_feedback as feedback
from rich.console import Console

from opto_core.engine import events
from opto_core.engine.loop import optimize
from opto_core.engine.progress import RunDisplay, step_lines
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


def make():
    target = scale_target()
    return target, target.parameters()[0]


def say(k):
    return json.dumps(
        {"reasoning": f"k should be {k}: every output is a third of what is expected", "suggestion": {"k": k}}
    )


@pytest.mark.parametrize("executor", ["threads", "asyncio"])
def test_events_arrive_in_order_with_counts_usage_and_the_decision(executor):
    target, k = make()
    seen: list[events.RunEvent] = []
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0), say(3.0)])),
        valset=VAL,
        max_steps=2,
        batch_size=2,
        executor=executor,
        concurrency=2,
        on_event=seen.append,
    )
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished" and seen[-1].result is result
    initial = [e for e in seen if isinstance(e, events.EvaluationDone) and e.step == 0]
    assert [(e.done, e.total, e.which) for e in initial] == [(1, 3, "initial"), (2, 3, "initial"), (3, 3, "initial")]
    first = kinds.index("StepStarted")
    step_one = kinds[first : kinds.index("StepDecided") + 1]
    assert step_one == [
        "StepStarted",
        "EvaluationDone",
        "EvaluationDone",
        "OptimizerCallStarted",
        "OptimizerCallFinished",
        "EvaluationDone",
        "EvaluationDone",
        "EvaluationDone",
        "StepDecided",
    ]
    checks = [e for e in seen if isinstance(e, events.EvaluationDone) and e.step == 1 and e.which == "check"]
    assert [e.done for e in checks] == [1, 2, 3] and checks[-1].total == 3
    finished = next(e for e in seen if isinstance(e, events.OptimizerCallFinished))
    assert finished.call_tokens > 0 and finished.tokens == finished.call_tokens and finished.seconds >= 0
    decided = [e for e in seen if isinstance(e, events.StepDecided)]
    assert decided[0].kept and decided[0].decision.startswith("kept: score")
    assert decided[0].record == result.history[1] and decided[0].best_score == 0.0
    assert seen[-1].tokens == result.usage["prompt_tokens"] + result.usage["completion_tokens"]


def test_a_listener_that_raises_is_reported_once_and_the_run_goes_on(caplog):
    target, k = make()
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("display crashed")

    caplog.set_level(logging.WARNING, logger="opto")
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])),
        max_steps=1,
        batch_size=2,
        on_event=broken,
    )
    assert result.best_values == {"k": 3.0} and len(calls) == 1
    assert [r.getMessage() for r in caplog.records if "display crashed" in r.getMessage()][0].startswith(
        "the on_event listener"
    )


def test_without_a_terminal_the_display_prints_plain_lines_only():
    target, k = make()
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=100))
    optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])),
        max_steps=1,
        batch_size=2,
        on_event=display,
    )
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text  # no control characters in a pipe
    assert "step 1: asking the optimizer for a proposal" in text
    assert "step 1: kept: score" in text and "k: 1.0 -> 3.0" in text
    assert "optimizer's reasoning: k should be 3.0" in text


def test_in_a_terminal_the_display_keeps_one_live_line():
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=120, force_terminal=True))
    display(events.RunStarted(0, max_steps=3))
    display(
        events.StepStarted(
            2, {"prompt_tokens": 1000, "completion_tokens": 234, "cost_usd": 0.0123}, 0.75, max_steps=3, runs=4
        )
    )
    display(
        events.EvaluationDone(
            2,
            {"prompt_tokens": 1000, "completion_tokens": 234, "cost_usd": 0.0123},
            0.75,
            done=3,
            total=4,
            which="check",
        )
    )
    line = display.line().plain
    assert line == "step 2/3 · check 3/4 runs · 1,234 tokens $0.0123 · best 0.750"
    display(events.OptimizerCallStarted(2))
    assert "optimizer call 0." in display.line().plain
    display.close()
    assert "\x1b[" in out.getvalue()  # drawn with cursor control, and removed at the end


def test_step_lines_say_what_changed_and_why():
    record = {
        "step": 3,
        "decision": "rolled back: score 0.5 vs 0.75 (keep rule 'not_worse')",
        "kept": False,
        "best_score": 0.75,
        "values_before": {"t": 0.9, "prompt": "Be brief."},
        "proposal": {
            "accepted": {"t": 0.2, "prompt": "Be brief.\nAnswer with a number."},
            "proposed_by": {"t": "search", "prompt": "llm"},
            "rejected": {"x": "unknown variable"},
            "reasoning": "The answers are rounded.",
        },
    }
    assert step_lines(record) == [
        "step 3: rolled back: score 0.5 vs 0.75 (keep rule 'not_worse'); best so far 0.750",
        "  t: 0.9 -> 0.2 (by the search part)",
        "  prompt: new text, 31 characters (by the LLM)",
        "  rejected x: unknown variable",
        "  optimizer's reasoning: The answers are rounded.",
    ]


def test_a_step_whose_llm_answer_could_not_be_used_says_so():
    record = {
        "step": 2,
        "decision": "no change: the optimizer proposed nothing usable",
        "kept": False,
        "best_score": 0.5,
        "values_before": {"t": 0.9},
        "proposal": {
            "accepted": {"t": 0.4},
            "proposed_by": {"t": "search"},
            "error": "no JSON object found in the answer; answer with one JSON object",
        },
    }
    lines = step_lines(record)
    assert lines[1] == "  t: 0.9 -> 0.4 (by the search part)"
    assert (
        lines[2]
        == "  the LLM's answer could not be used: no JSON object found in the answer; answer with one JSON object"
    )
