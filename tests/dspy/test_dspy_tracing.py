"""Tracing real DSPy programs into OPTO graphs: nodes, data-flow edges, parameters, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest
from dspy_programs import TwoSame, celsius_examples

from opto_adapters.dspy import DSPyTracer, ProgramTarget
from opto_adapters.dspy.testing import rule_lm
from opto_core import Feedback, Graph, backward, render


def ops(graph, op_type=None):
    return [n for n in graph.nodes if n.kind == "op" and (op_type is None or n.op_type == op_type)]


def parents(graph, node_id):
    return {(e.id, e.arg) for e in graph[node_id].edges}


def test_two_predictors_with_identical_signatures_have_their_own_nodes_and_parameters(two_same, echo_lm):
    target = ProgramTarget(two_same, lm=echo_lm)
    output, graph = target.run(dspy.Example(question="2+2?").with_inputs("question"))
    assert output.answer == "answer<question=answer<question=2+2?>>"
    assert type(output.answer) is str  # provenance tags do not leak to the caller
    predictors = ops(graph, "dspy.Predict")
    assert [n.name for n in predictors] == ["first", "second"]
    first, second = predictors
    # format <- inputs and prompt parameters; lm <- format and LM settings; predictor <- lm
    assert parents(graph, "first.format#0") == {
        ("question#0", "question"),
        ("param:first.instructions", "instructions"),
        ("param:first.fields.answer.desc", "answer.desc"),
        ("param:first.demos", "demos"),
    }
    assert parents(graph, "first.lm#0") == {
        ("first.format#0", "messages"),
        ("param:first.lm.temperature", "temperature"),
        ("param:first.lm.max_tokens", "max_tokens"),
    }
    assert parents(graph, first.id) == {("first.lm#0", "completion")}
    # the second predictor's input is the first one's output (found by identity, not by signature)
    assert ("first#0", "question") in parents(graph, "second.format#0")
    assert "param:second.instructions" in graph and "param:first.instructions" in graph
    assert not any(e.id.startswith("param:first") for e in graph["second.format#0"].edges)
    assert second.value == {"answer": output.answer}
    # one output: the program's op, fed by the second predictor's answer
    (out,) = graph.outputs
    program_op = graph[out.edges[0].id]
    assert program_op.name == "TwoSame" and parents(graph, program_op.id) == {(second.id, "answer")}
    assert graph.meta["adapter"] == "opto_adapters.dspy" and graph.meta["framework_version"] == dspy.__version__
    assert graph.meta["usage"]["prompt_tokens"] > 0 and "trace_errors" not in graph.meta
    assert Graph.from_json(graph.to_json()) == graph


def test_backward_reaches_both_predictors_parameters(two_same, echo_lm):
    _, graph = ProgramTarget(two_same, lm=echo_lm).run({"question": "why?"})
    instance = backward(graph, Feedback(0.0, "too vague"))
    names = set(instance.parameter_names)
    assert {"first.instructions", "second.instructions", "first.lm.temperature", "second.demos"} <= names
    text = render(instance, budget_tokens=4000)
    assert "second0 = second(completion=second_lm0)" in text
    assert "second_format0 = second.format(question=first0" in text


def test_chain_of_thought_and_an_f_string_input_are_linked_by_value(cot_then_predict, echo_lm):
    output, graph = ProgramTarget(cot_then_predict, lm=echo_lm).run(dspy.Example(question="Q").with_inputs("question"))
    think = graph["think.predict#0"]
    assert set(think.value) == {"reasoning", "answer"}
    assert "param:think.predict.fields.reasoning.desc" in {e.id for e in graph["think.predict.format#0"].edges}
    polish_format = graph["polish.format#0"]
    assert ("think.predict#0", "draft") in {(e.id, e.arg) for e in polish_format.edges}
    assert graph["polish#0"].meta["inputs"] == {"draft": "contains"}
    assert output.answer.startswith("answer<draft=Draft answer: answer<")


def test_react_trajectory_links_tool_calls_to_the_step_that_chose_them(make_agent, agent_lm):
    agent = make_agent()
    output, graph = ProgramTarget(agent, lm=agent_lm).run(celsius_examples([100])[0])
    assert output.answer == "203.0"  # the planted bug: 100 C -> 203 F
    tool = next(n for n in ops(graph, "dspy.Tool") if n.name == "to_fahrenheit")
    assert tool.value == 203.0
    assert parents(graph, tool.id) == {("react#0", "next_tool_args"), ("param:tools.to_fahrenheit.code", "__code")}
    assert tool.meta["args"] == {"celsius": "100.0"}
    assert "return celsius * 9 / 5 + 23" in graph["param:tools.to_fahrenheit.code"].value
    # the second react step reads a trajectory built from the first step and its observation
    trajectory = graph[next(e.id for e in graph["react.format#1"].edges if e.arg == "trajectory")]
    assert trajectory.op_type == "dspy.ReAct.trajectory"
    assert parents(graph, trajectory.id) == {("react#0", "step_0"), ("to_fahrenheit#0", "observation_0")}
    assert "203.0" in trajectory.value
    # the tool's description is in the agent's prompt, so it feeds every react.format
    assert ("param:tools.to_fahrenheit.desc", "tools.to_fahrenheit.desc") in parents(graph, "react.format#0")
    # the answer depends on the tool code through the trajectory: backward finds it
    instance = backward(graph, Feedback(0.0, "100 C is 212 F"))
    assert "tools.to_fahrenheit.code" in instance.parameter_names
    assert "extract.predict.instructions" in instance.parameter_names


def test_a_failing_tool_becomes_an_exception_node_whose_message_reaches_the_trajectory(make_agent, agent_lm):
    def to_fahrenheit(celsius: float) -> float:
        """Convert a temperature in Celsius to Fahrenheit."""
        raise RuntimeError("thermometer offline")

    output, graph = ProgramTarget(make_agent(to_fahrenheit), lm=agent_lm).run(celsius_examples([5])[0])
    (failed,) = [n for n in graph.nodes if n.kind == "exception"]
    assert failed.name == "to_fahrenheit" and "thermometer offline" in failed.value
    assert failed.id not in {o.edges[0].id for o in graph.outputs}  # ReAct caught it: not an output
    trajectory = graph[next(e.id for e in graph["react.format#1"].edges if e.arg == "trajectory")]
    assert (failed.id, "observation_0") in parents(graph, trajectory.id)
    assert "thermometer offline" in trajectory.value


def test_a_failing_lm_gives_an_exception_output_that_backward_can_use(two_same):
    def policy(call):
        if "question=answer<" in " ".join(f"{k}={v}" for k, v in call.inputs.items()):
            raise ConnectionError("server went away")
        return {"answer": f"answer<question={call.inputs['question']}>"}

    output, graph = ProgramTarget(two_same, lm=rule_lm(policy)).run({"question": "hi"})
    assert isinstance(output, Exception) and "server went away" in str(output)
    (out,) = graph.outputs
    failure = graph[out.edges[0].id]
    assert failure.kind == "exception" and "server went away" in failure.value
    instance = backward(graph, Feedback(0.0, str(output)))
    assert "second.lm.temperature" in instance.parameter_names  # the failing call's own settings
    assert "first.instructions" in instance.parameter_names  # and what fed it


def test_dspy_evaluate_with_threads_gives_one_correct_graph_per_example():
    program = TwoSame()
    tracer = DSPyTracer(program)
    lm = rule_lm(lambda call: {"answer": f"A({call.inputs['question']})"})
    devset = [dspy.Example(question=f"q{i:02d}", answer=f"A(A(q{i:02d}))").with_inputs("question") for i in range(16)]
    with dspy.context(lm=lm, callbacks=[tracer]):
        result = dspy.Evaluate(
            devset=devset, metric=lambda g, p, t=None: g.answer == p.answer, num_threads=4, display_progress=False
        )(program)
    assert result.score == 100.0
    assert len(tracer.graphs) == 16 and not tracer.errors
    seen = set()
    for graph in tracer.graphs:
        (question,) = [n for n in graph.nodes if n.kind == "input"]
        seen.add(question.value)
        assert graph["first.format#0"].edges[0].id == question.id
        assert graph["first#0"].value == {"answer": f"A({question.value})"}
        assert graph["second#0"].value == {"answer": f"A(A({question.value}))"}
        assert len(ops(graph, "dspy.Predict")) == 2 and len(graph.outputs) == 1
    assert seen == {e.question for e in devset}


def test_target_runs_in_threads_keep_graphs_apart(two_same):
    lm = rule_lm(lambda call: {"answer": f"A({call.inputs['question']})"})
    target = ProgramTarget(two_same, lm=lm)
    examples = [{"question": f"question {i}"} for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(target.run, examples))
    for example, (output, graph) in zip(examples, results):
        assert output.answer == f"A(A({example['question']}))"
        assert [n.value for n in graph.nodes if n.kind == "input"] == [example["question"]]
        assert len(graph) == len(results[0][1])  # same shape, no node from another run


def test_the_threads_of_the_loop_see_the_lm_set_with_dspy_context(two_same, echo_lm):
    with dspy.context(lm=echo_lm):
        target = ProgramTarget(two_same)  # captures the thread's DSPy context
    with ThreadPoolExecutor(2) as pool:
        output, graph = pool.submit(target.run, {"question": "x"}).result()
    assert not isinstance(output, Exception), output
    assert output.answer.startswith("answer<")


def test_example_inputs_must_be_known():
    target = ProgramTarget(TwoSame())
    assert target.inputs_of({"question": "q", "answer": "a"}) == {"question": "q"}  # from forward's signature
    with pytest.raises(ValueError, match="lacks the input fields"):
        target.inputs_of(dspy.Example(answer="a").with_inputs("question"))
    with pytest.raises(ValueError, match="must be a dspy.Example or a dict"):
        target.inputs_of("just a string")


async def test_concurrent_acall_runs_give_one_graph_each():
    import asyncio

    class AsyncTwo(TwoSame):
        async def aforward(self, question):
            draft = await self.first.acall(question=question)
            return await self.second.acall(question=draft.answer)

    program = AsyncTwo()
    tracer = DSPyTracer(program)
    lm = rule_lm(lambda call: {"answer": f"A({call.inputs['question']})"})
    with dspy.context(lm=lm, callbacks=[tracer]):
        results = await asyncio.gather(*(program.acall(question=f"q{i}") for i in range(5)))
    assert [r.answer for r in results] == [f"A(A(q{i}))" for i in range(5)]
    assert len(tracer.graphs) == 5 and not tracer.errors
    for graph in tracer.graphs:
        (question,) = [n for n in graph.nodes if n.kind == "input"]
        assert graph["second#0"].value == {"answer": f"A(A({question.value}))"}
        assert ("first#0", "question") in parents(graph, "second.format#0")
