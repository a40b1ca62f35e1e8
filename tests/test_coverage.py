"""Coverage: every trainable parameter feedback cannot reach is reported, with its reason and fix,
by `coverage`, by the loop's one warning, in the step record and in the report; and a run that
cannot credit its parameters stops before the optimizer is asked anything."""

from __future__ import annotations

import json
import logging

import pytest

from opto_core import (
    Coverage,
    CoverageError,
    Edge,
    FunctionTarget,
    Graph,
    OptoPrime,
    Parameter,
    Settings,
    coverage,
    op,
    optimize,
    write_report,
)
from opto_core.engine.executors import Evaluation, InfrastructureError
from opto_core.kernel.feedback import Feedback
from opto_core.testing import ScriptedLLM

SYSTEM = "You are the support agent of {company}. Answer in one line."


def build():
    """A support workflow: a template prompt that is used, a style that is not, a rate computed off the path."""
    system = Parameter("agent.system", "text", SYSTEM, template=True)
    style = Parameter("agent.style", "text", "Use a friendly tone and sign as Bob.")  # never used
    rate = Parameter("discount.rate", "float", 0.1, lower=0.0, upper=1.0)

    @op
    def reply(prompt, question):
        """The model call (here: deterministic)."""
        return prompt.format(company="Acme") + " | " + question.upper()

    @op
    def discount(price, rate):
        return round(price * (1 - rate), 2)

    def workflow(question, price):
        answer = reply(system, question)
        discount(price, rate)  # computed, but the answer does not depend on it
        return answer

    return FunctionTarget(workflow, [system, style, rate], input_keys=["question", "price"])


EXAMPLES = [{"question": "where is my order?", "price": 10.0}, {"question": "refund?", "price": 4.0}]


def feedback(example, output):
    return (1.0 if "ACME" in output.upper() else 0.0, "mention the company")


def test_coverage_says_which_parameters_feedback_reaches_and_why_not():
    found = coverage(build(), EXAMPLES, feedback)
    assert found.reached == ["agent.system"] and found.unreached == ["agent.style", "discount.rate"]
    system, style, rate = found["agent.system"], found["agent.style"], found["discount.rate"]
    assert system.reached and system.path == ["agent.system", "reply (output)"] and system.runs_reached == 2
    assert not style.reached and style.cause == "unlinked" and "never seen in any call" in style.reason
    assert "pass the Parameter 'agent.style' itself to the @op" in style.fix
    assert rate.cause == "off_path" and "seen off the path to the output" in rate.reason and "discount" in rate.reason
    assert "make the returned answer depend on those steps" in rate.fix
    table = str(found)
    assert table.splitlines()[0] == "Coverage over 2 run(s): feedback reaches 1 of 3 trainable parameter(s)"
    assert "agent.system -> reply (output)" in table and "fix discount.rate:" in table
    assert Coverage.from_dict(json.loads(json.dumps(found.to_dict()))).to_dict() == found.to_dict()


def test_coverage_without_feedback_fn_judges_paths_only():
    assert coverage(build(), EXAMPLES[:1]).unreached == ["agent.style", "discount.rate"]
    with pytest.raises(ValueError, match="at least one example"):
        coverage(build(), [])


def test_frozen_parameters_are_excluded_not_unreached():
    target = build()
    target.bound.freeze_except({"agent.system"})
    found = coverage(target, EXAMPLES[:1])
    assert found.unreached == [] and found.complete
    assert found["agent.style"].cause == "frozen" and found["agent.style"].reason.startswith("excluded")


def _graph_with(via: str) -> Graph:
    """parameter p -> llm -> final (output), the second edge of kind ``via``."""
    graph = Graph()
    param = graph.add_parameter(Parameter("p", "text", "text"))
    step = graph.add("op", "llm", "answer", parents=[Edge(param.id, "system")])
    final = graph.add("op", "final", "answer", parents=[Edge(step.id, "x", via)])
    graph.mark_output(final.id)
    return graph


def test_edges_left_out_by_follow_and_parameters_never_recorded_are_told_apart():
    graph = _graph_with("context")
    parameter = Parameter("p", "text", "text")
    assert Coverage.of_graphs([parameter], [graph]).reached == ["p"]
    only_data = Coverage.of_graphs([parameter], [graph], follow=("data",))["p"]
    assert only_data.cause == "excluded_edges" and "'context' edges" in only_data.reason
    assert "Settings.follow" in only_data.fix
    missing = Coverage.of_graphs([Parameter("q", "text", "x")], [graph, graph])["q"]
    assert missing.cause == "never_seen" and "none of the 2 run(s) recorded it" in missing.reason


def test_a_run_that_raised_is_named_as_the_likely_cause():
    @op
    def step(text):
        raise ValueError("the tool crashed")

    used = Parameter("used", "text", "some instructions")
    target = FunctionTarget(lambda question: step(question), [used])
    found = coverage(target, [{"question": "q"}])
    assert found["used"].cause == "unlinked" and found.failed_runs == 1
    assert "raised, perhaps before using it: ValueError: the tool crashed" in found["used"].reason


def test_runs_that_failed_outside_the_workflow_are_not_judged():
    broken = Evaluation(
        0, InfrastructureError("connection refused"), Graph(), Feedback(score=0.0), True, "infrastructure"
    )
    found = Coverage.of([Parameter("p", "text", "x")], [broken])
    assert not found.judged and "connection refused" in found.note
    found.enforce(require=True)  # nothing judged: said, never an error


# ----- in the loop -----------------------------------------------------------------------------------------------
def _optimizer(target, replies=()):
    llm = ScriptedLLM(
        list(replies)
        or [
            json.dumps(
                {
                    "reasoning": "name the company",
                    "suggestion": {"agent.system": "You help {company} customers. Answer in one line."},
                }
            )
        ],
        repeat_last=True,
    )
    return OptoPrime(target.parameters(), llm), llm


def test_the_loop_warns_once_records_coverage_and_the_report_shows_it(tmp_path, caplog):
    target = build()
    optimizer, llm = _optimizer(target)
    with caplog.at_level(logging.WARNING, logger="opto"):
        result = optimize(target, EXAMPLES, feedback, optimizer, max_steps=2, batch_size=2, run_dir=str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if "feedback cannot reach" in r.getMessage()]
    assert len(warnings) == 1  # one warning, on the first evaluation, not one per step
    assert "agent.style: its value was never seen in any call" in warnings[0]
    assert "discount.rate: seen off the path to the output" in warnings[0] and "Fix:" in warnings[0]
    record = result.history[0]
    assert record["kind"] == "initial" and record["coverage"]["unreached"] == ["agent.style", "discount.rate"]
    assert all("coverage" not in r for r in result.history[1:])
    assert len(llm.requests) >= 1  # the run went on: only the unreached parameters are reported
    page = write_report(tmp_path).read_text()
    assert "<h2>Coverage</h2>" in page and "Feedback never reaches 2 trainable parameter(s)" in page
    assert "agent.style" in page and "never seen in any call" in page


def test_require_coverage_stops_before_any_optimizer_call(tmp_path):
    target = build()
    optimizer, llm = _optimizer(target)
    with pytest.raises(CoverageError) as raised:
        optimize(target, EXAMPLES, feedback, optimizer, max_steps=2, require_coverage=True)
    assert llm.requests == []
    message = str(raised.value)
    assert message.startswith("stopped before any optimizer call: require_coverage=True")
    assert "agent.style" in message and "discount.rate" in message and "agent.system" not in message.split("\n", 1)[1]
    assert raised.value.coverage.unreached == ["agent.style", "discount.rate"]
    with pytest.raises(CoverageError):
        optimize(target, EXAMPLES, feedback, optimizer, settings=Settings(require_coverage=True, max_steps=1))
    assert llm.requests == []


def test_a_program_where_nothing_is_reachable_is_an_error_before_any_optimizer_call():
    ignored = Parameter("prompt", "text", "Answer politely.")
    target = FunctionTarget(lambda question: question.upper(), [ignored])
    optimizer, llm = _optimizer(target)
    with pytest.raises(CoverageError, match="no trainable parameter is reachable") as raised:
        optimize(target, [{"question": "hi"}], lambda e, o: 1.0, optimizer, max_steps=3)
    assert llm.requests == [] and "prompt: its value was never seen in any call" in str(raised.value)


def test_a_fully_covered_program_logs_no_warning(caplog):
    system = Parameter("system", "text", "Be brief.")

    @op
    def answer(prompt, question):
        return f"{prompt} {question}"

    target = FunctionTarget(lambda question: answer(system, question), [system])
    optimizer, llm = _optimizer(target, [json.dumps({"reasoning": "ok", "suggestion": {}})])
    with caplog.at_level(logging.INFO, logger="opto"):
        result = optimize(target, [{"question": "hi"}], lambda e, o: 1.0, optimizer, max_steps=1)
    assert result.history[0]["coverage"]["unreached"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "reach" in r.getMessage()]
    assert any("feedback reaches all 1 trainable parameter(s)" in r.getMessage() for r in caplog.records)
