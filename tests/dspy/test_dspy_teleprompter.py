"""OptoTeleprompter on real DSPy programs: a drop-in DSPy optimizer driven by OptoPrime."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy_programs import FIXED_TOOL, TwoSame, celsius_examples, fahrenheit_metric

from opto_adapters.dspy import ExampleError, OptimizationStopped, OptoTeleprompter, ProgramParameters, load_optimized
from opto_adapters.dspy.testing import rule_lm
from opto_core import FeedbackError
from opto_core.engine.fingerprint import WorkflowChanged
from opto_core.testing import ScriptedLLM


def answer(reasoning, **suggestion):
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


def user_prompt(llm, index=0):
    return llm.requests[index]["messages"][-1]["content"]


def test_compile_fixes_a_buggy_tool_and_sets_a_temperature(tmp_path, make_agent, agent_lm):
    student = make_agent()
    trainset = celsius_examples()
    llm = ScriptedLLM(
        [
            answer(
                "The tool adds 23 instead of 32.",
                **{"tools.to_fahrenheit.code": FIXED_TOOL, "react.lm.temperature": 0.0},
            )
        ],
        repeat_last=True,
    )
    teleprompter = OptoTeleprompter(
        metric=fahrenheit_metric, llm=llm, max_steps=2, batch_size=3, num_threads=2, run_dir=str(tmp_path / "run")
    )
    with dspy.context(lm=agent_lm):
        optimized = teleprompter.compile(student, trainset=trainset, valset=trainset[:4])
        evaluate = dspy.Evaluate(devset=trainset, metric=fahrenheit_metric, num_threads=2, display_progress=False)
        before, after = evaluate(student).score, evaluate(optimized).score
    assert (before, after) == (0.0, 100.0)
    # the student is untouched
    assert student.tools["to_fahrenheit"].func(100) == 203.0 and student.react.config == {}
    assert optimized.tools["to_fahrenheit"].func(100) == 212.0 and optimized.react.config == {"temperature": 0.0}
    # what DSPy users look for
    assert optimized.score == 1.0
    assert [c["score"] for c in optimized.candidate_programs] == [1.0, 0.0]
    assert optimized.candidate_programs[0]["program"].tools["to_fahrenheit"].func(0) == 32.0
    assert optimized.opto_history[0]["kind"] == "initial" and optimized.opto_history[1]["kept"] is True
    report = Path(optimized.opto_report)
    assert report == tmp_path / "run"
    for name in ("checkpoint.json", "history.jsonl", "config.json", "program.json", "program.opto.json"):
        assert (report / name).exists(), name
    # the optimizer saw the tool's code, the trace and the labels
    prompt = user_prompt(llm)
    assert "return celsius * 9 / 5 + 23" in prompt and "to_fahrenheit0 = to_fahrenheit(" in prompt
    assert "score: 0 | Expected answer='212.0'; the program gave answer='203.0'." in prompt
    # the saved program comes back in a fresh process-like copy
    fresh = load_optimized(make_agent(), report / "program.json")
    assert fresh.tools["to_fahrenheit"].func(100) == 212.0 and fresh.react.config == {"temperature": 0.0}


def test_gepa_style_feedback_reaches_the_optimizer_prompt(make_agent, agent_lm):
    seen = []

    def metric(gold, pred, trace, pred_name, pred_trace):  # GEPA's five required arguments
        seen.append((trace, pred_name, pred_trace))
        ok = fahrenheit_metric(gold, pred)
        off = float(pred.answer) - float(gold.answer)
        text = "ok" if ok else f"Off by {off:+.1f} degrees: check the tool's offset."
        return dspy.Prediction(score=ok, feedback=text)

    llm = ScriptedLLM([answer("no idea yet")], repeat_last=True)
    with dspy.context(lm=agent_lm):
        OptoTeleprompter(metric=metric, llm=llm, max_steps=1, batch_size=2, num_threads=1).compile(
            make_agent(), trainset=celsius_examples([0, 100])
        )
    assert set(seen) == {(None, None, None)}
    prompt = user_prompt(llm)
    assert "#Feedback" in prompt and "Off by -9.0 degrees: check the tool's offset." in prompt


def test_identical_signatures_are_optimized_separately(two_same):
    def policy(call):
        text = call.inputs["question"]
        if "Answer in capitals." in call.instructions:
            text = text.upper()
        return {"answer": text}

    lm = rule_lm(policy)
    trainset = [dspy.Example(question=q, answer=q.upper()).with_inputs("question") for q in ("abc", "hello", "xyz")]
    llm = ScriptedLLM(
        [answer("only the second predictor writes the final answer", **{"second.instructions": "Answer in capitals."})],
        repeat_last=True,
    )
    with dspy.context(lm=lm):
        optimized = OptoTeleprompter(
            metric=lambda g, p, t=None: g.answer == p.answer, llm=llm, max_steps=1, num_threads=1
        ).compile(two_same, trainset=trainset)
        assert optimized(question="quiet").answer == "QUIET"
    prompt = user_prompt(llm)
    assert "(text) first.instructions=" in prompt and "(text) second.instructions=" in prompt
    assert optimized.second.signature.instructions == "Answer in capitals."
    assert optimized.first.signature.instructions == two_same.first.signature.instructions
    last_two = lm.engine.requests[-2:]
    assert [c.instructions for c in last_two] == [two_same.first.signature.instructions, "Answer in capitals."]


def test_a_failing_lm_is_never_scored_nor_shown_to_the_optimizer_and_counts_as_an_error(two_same):
    def policy(call):
        if "boom" in call.inputs["question"]:
            raise ConnectionError("upstream 503 for this request")
        return {"answer": call.inputs["question"]}

    trainset = [dspy.Example(question=q, answer=q).with_inputs("question") for q in ("a boom", "fine", "ok")]
    llm = ScriptedLLM([answer("cannot fix the server")], repeat_last=True)
    with dspy.context(lm=rule_lm(policy)):
        optimized = OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer, llm=llm, max_steps=1, batch_size=3, num_threads=1, max_errors=5
        ).compile(two_same, trainset=trainset)
    step = optimized.opto_history[1]
    assert step["batch_score"] == 1.0  # the two runs that got an answer; the failed one says nothing
    assert any("upstream 503" in f["text"] for f in step["feedback"])  # recorded...
    assert "upstream 503" in step["infrastructure_errors"][0]["error"] and step["errors_total"] >= 1
    assert "upstream 503 for this request" not in user_prompt(llm)  # ... but not the optimizer's business


def test_too_many_failures_stop_clearly_with_everything_saved(tmp_path, two_same):
    def policy(call):
        raise ConnectionError("the LM is down")

    trainset = [dspy.Example(question=q, answer=q).with_inputs("question") for q in ("a", "b", "c")]
    llm = ScriptedLLM([answer("nothing to do")], repeat_last=True)
    with dspy.context(lm=rule_lm(policy)), pytest.raises(OptimizationStopped) as stopped:
        OptoTeleprompter(
            metric=lambda g, p: 1.0,
            llm=llm,
            max_steps=3,
            batch_size=3,
            num_threads=1,
            max_errors=2,
            run_dir=str(tmp_path / "run"),
        ).compile(two_same, trainset=trainset)
    error = stopped.value
    assert "max_errors=2" in str(error) and str(tmp_path / "run") in str(error)
    assert error.result.stopped_reason == "max_errors"
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["done"] is True
    assert (tmp_path / "run" / "program.opto.json").exists()
    assert isinstance(error.program, TwoSame) and error.program is not two_same


def test_a_metric_that_raises_names_the_example_and_leaves_the_student_alone(two_same, echo_lm):
    def metric(gold, pred, trace=None):
        if gold.question == "bad one":
            raise KeyError("score")
        return 1.0

    trainset = [dspy.Example(question=q, answer="x").with_inputs("question") for q in ("good", "bad one")]
    before = ProgramParameters(two_same).values()
    with dspy.context(lm=echo_lm), pytest.raises(FeedbackError, match=r"bad one.*KeyError|KeyError.*bad one"):
        OptoTeleprompter(metric=metric, llm=ScriptedLLM([]), max_steps=1, num_threads=1).compile(
            two_same, trainset=trainset
        )
    assert ProgramParameters(two_same).values() == before


def test_a_metric_returning_no_number_is_a_clear_error(two_same, echo_lm):
    trainset = [dspy.Example(question="q1", answer="x").with_inputs("question")]
    with dspy.context(lm=echo_lm), pytest.raises(FeedbackError, match="returned str 'great'.*q1"):
        OptoTeleprompter(metric=lambda g, p: "great", llm=ScriptedLLM([]), max_steps=1, num_threads=1).compile(
            two_same, trainset=trainset
        )


def test_bad_input_is_refused_before_anything_runs(two_same):
    class Plain(dspy.Module):
        def forward(self, question):
            return dspy.Prediction(answer=question)

    trainset = [dspy.Example(question="q", answer="a").with_inputs("question")]
    llm = ScriptedLLM([])
    with pytest.raises(ValueError, match="no metric"):
        OptoTeleprompter(llm=llm).compile(two_same, trainset=trainset)
    with pytest.raises(ValueError, match="no predictors"):
        OptoTeleprompter(metric=lambda g, p: 1.0, llm=llm).compile(Plain(), trainset=trainset)
    with pytest.raises(ValueError, match="non-empty trainset"):
        OptoTeleprompter(metric=lambda g, p: 1.0, llm=llm).compile(two_same, trainset=[])
    with pytest.raises(ExampleError, match=r"trainset\[1\].*lacks the input fields \['question'\]"):
        OptoTeleprompter(metric=lambda g, p: 1.0, llm=llm).compile(
            two_same, trainset=[trainset[0], dspy.Example(query="q").with_inputs("question")]
        )
    with pytest.raises(TypeError, match="unexpected arguments"):
        OptoTeleprompter(metric=lambda g, p: 1.0, llm=llm).compile(two_same, trainset=trainset, num_trials=3)
    with pytest.raises(ValueError, match="auto"):
        OptoTeleprompter(auto="extreme")
    with pytest.raises(ValueError, match=r"no LM for the predictors \['first', 'second'\]"):
        OptoTeleprompter(metric=lambda g, p: 1.0, llm=llm).compile(two_same, trainset=trainset)
    assert llm.requests == []


def test_the_metric_given_to_compile_wins_and_threads_give_one_graph_per_example(tmp_path, two_same):
    lm = rule_lm(lambda call: {"answer": f"A({call.inputs['question']})"})
    trainset = [dspy.Example(question=f"q{i}", answer=f"A(A(q{i}))").with_inputs("question") for i in range(8)]
    llm = ScriptedLLM([answer("fine as it is")], repeat_last=True)
    with dspy.context(lm=lm):
        optimized = OptoTeleprompter(
            metric=lambda g, p: 0.0, llm=llm, max_steps=1, batch_size=8, num_threads=4, run_dir=str(tmp_path / "run")
        ).compile(two_same, trainset=trainset, metric=lambda g, p: g.answer == p.answer)
    assert optimized.score == 1.0 and optimized.opto_history[0]["eval_score"] == 1.0
    prompt = user_prompt(llm)
    assert prompt.count("## Example ") == 8
    sections = prompt.split("## Example ")[1:]
    for i, section in enumerate(sections):  # one graph per example: its own input, outputs and feedback only
        assert f"(str) question0=q{i}\n" in section
        assert f"score: 1 | Expected answer='A(A(q{i}))'; the program gave answer='A(A(q{i}))'." in section
        assert all(f"q{j}" not in section for j in range(8) if j != i)


def test_reusing_the_run_directory_resumes_the_run(tmp_path, two_same):
    def policy(call):
        shout = "Answer in capitals." in call.instructions
        return {"answer": call.inputs["question"].upper() if shout else call.inputs["question"]}

    trainset = [dspy.Example(question=q, answer=q.upper()).with_inputs("question") for q in ("abc", "def")]
    run_dir = str(tmp_path / "run")
    first_llm = ScriptedLLM([answer("shout", **{"second.instructions": "Answer in capitals."})])
    with dspy.context(lm=rule_lm(policy)):
        first = OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer, llm=first_llm, max_steps=1, num_threads=1, run_dir=run_dir
        ).compile(two_same, trainset=trainset)
        second_llm = ScriptedLLM([answer("nothing more")], repeat_last=True)
        resumed = OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer, llm=second_llm, max_steps=2, num_threads=1, run_dir=run_dir
        ).compile(two_same, trainset=trainset)
    assert first.score == 1.0 and len(first.opto_history) == 2
    assert [r["step"] for r in resumed.opto_history] == [0, 1, 2]  # step 1 came from the first run
    assert resumed.second.signature.instructions == "Answer in capitals."  # restored from the checkpoint
    assert len(second_llm.requests) == 1 and two_same.second.signature.instructions != "Answer in capitals."


def test_compile_on_a_run_directory_of_an_edited_program_refuses_instead_of_applying_old_values(tmp_path):
    def policy(call):
        return {"answer": call.inputs["question"]}

    trainset = [dspy.Example(question=q, answer=q).with_inputs("question") for q in ("abc", "def")]
    run_dir = str(tmp_path / "run")
    with dspy.context(lm=rule_lm(policy)):
        OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer,
            llm=ScriptedLLM([answer("none")]),
            max_steps=1,
            num_threads=1,
            run_dir=run_dir,
        ).compile(dspy.Predict("question -> answer"), trainset=trainset)
        edited = dspy.Predict(dspy.Signature("question -> answer", "Answer briefly."))  # the author's new instructions
        with pytest.raises(WorkflowChanged, match=r"initial value of predict.instructions changed"):
            OptoTeleprompter(
                metric=lambda g, p: g.answer == p.answer,
                llm=ScriptedLLM([answer("none")]),
                max_steps=2,
                num_threads=1,
                run_dir=run_dir,
            ).compile(edited, trainset=trainset)
        started_over = OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer,
            llm=ScriptedLLM([answer("none")]),
            max_steps=1,
            num_threads=1,
            run_dir=run_dir,
            fresh=True,
        ).compile(edited, trainset=trainset)
    assert [r["step"] for r in started_over.opto_history] == [0, 1]
    assert started_over.signature.instructions == "Answer briefly."


def test_compile_after_the_tool_body_was_edited_names_the_diff_and_offers_both_ways_out(tmp_path, make_agent, agent_lm):
    def patched(celsius: float) -> float:
        """Convert a temperature in Celsius to Fahrenheit."""
        return celsius * 9 / 5 + 32  # the author fixed the offset by hand

    patched.__name__ = "to_fahrenheit"
    trainset = celsius_examples((0, 100))
    run_dir = str(tmp_path / "run")

    def compile_(student, steps, **settings):
        llm = ScriptedLLM([answer("nothing to change")], repeat_last=True)
        return OptoTeleprompter(
            metric=fahrenheit_metric, llm=llm, max_steps=steps, batch_size=2, num_threads=1, run_dir=run_dir, **settings
        ).compile(student, trainset=trainset)

    with dspy.context(lm=agent_lm):
        first = compile_(make_agent(), 1)
        with pytest.raises(WorkflowChanged, match="tool body of tools.to_fahrenheit.code changed") as refused:
            compile_(make_agent(patched), 2)
        assert "fresh=True" in str(refused.value) and "resume_changed=True" in str(refused.value)
        anyway = compile_(make_agent(patched), 2, resume_changed=True)
        started_over = compile_(make_agent(patched), 1, fresh=True)
    assert first.score == 0.0 and [r["step"] for r in anyway.opto_history] == [0, 1, 2]
    assert anyway.opto_history[1] == first.opto_history[1]  # continued the saved run
    assert [r["step"] for r in started_over.opto_history] == [0, 1] and started_over.score == 1.0
    assert started_over.tools["to_fahrenheit"].func(100) == 212.0
