"""The DSPy graph builder fed hand-made records (no DSPy program runs), and the callback's one guard."""

from __future__ import annotations

import dspy
import pytest

from opto_adapters.dspy import DSPyTracer
from opto_adapters.dspy.tracing.builder import GraphBuilder
from opto_adapters.dspy.tracing.records import (
    MODULE,
    PREDICT,
    REACT,
    CallEnded,
    FormatStarted,
    LMStarted,
    ModuleStarted,
    ParseStarted,
    ToolStarted,
)
from opto_core import Feedback, Graph, Parameter, backward


def parents(graph, node_id):
    return {(e.id, e.arg) for e in graph[node_id].edges}


def predict_call(builder, call_id, caller, name, inputs, answer, *, owner=None, lm_error=None):
    """The records DSPy reports for one ``dspy.Predict`` call: module, format, LM, parse, ends."""
    builder.feed(
        ModuleStarted(
            call_id,
            caller,
            PREDICT,
            "Predict",
            inputs,
            name=name,
            owner=owner or name,
            signature="question -> answer",
            output_fields=("answer",),
        )
    )
    builder.feed(FormatStarted(f"{call_id}.f", call_id, "ChatAdapter"))
    builder.feed(CallEnded(f"{call_id}.f", [{"role": "user", "content": f"question: {inputs['question']}"}]))
    builder.feed(LMStarted(f"{call_id}.lm", call_id, "scripted", {"temperature": 0.0}))
    if lm_error is not None:
        builder.feed(CallEnded(f"{call_id}.lm", error=lm_error))
        return builder.feed(CallEnded(call_id, error=lm_error))
    builder.feed(CallEnded(f"{call_id}.lm", [f"[[ ## answer ## ]]\n{answer}"]))
    builder.feed(ParseStarted(f"{call_id}.p", call_id, "ChatAdapter"))
    builder.feed(CallEnded(f"{call_id}.p", {"answer": answer}))
    return builder.feed(CallEnded(call_id, fields={"answer": answer}))


@pytest.fixture
def index():
    instructions = {name: Parameter(f"{name}.instructions", "text", f"Answer ({name}).") for name in ("a", "b")}
    temperature = Parameter("a.lm.temperature", "float", 0.0, lower=0.0, upper=2.0)
    return {
        "a": [("format", "instructions", instructions["a"]), ("lm", "temperature", temperature)],
        "b": [("format", "instructions", instructions["b"])],
    }


def test_two_predictors_in_a_module_are_linked_by_the_value_the_first_one_returned(index):
    builder = GraphBuilder("Pipeline", parameter_index=lambda: index, framework_version="test")
    run, traced = builder.begin({"question": "2+2?"})
    builder.feed(ModuleStarted("root", None, MODULE, "Pipeline", {"question": traced["question"]}, doc="Two steps."))
    first = predict_call(builder, "p1", "root", "a", {"question": traced["question"]}, "four")
    assert first["answer"] == "four"  # handed back tagged: the callback puts it into the Prediction
    second = predict_call(builder, "p2", "root", "b", {"question": first["answer"]}, "4")
    builder.feed(CallEnded("root", fields={"answer": second["answer"]}))

    (graph,) = builder.graphs
    assert graph is run.graph and run.done
    assert parents(graph, "a.format#0") == {("question#0", "question"), ("param:a.instructions", "instructions")}
    assert parents(graph, "a.lm#0") == {("a.format#0", "messages"), ("param:a.lm.temperature", "temperature")}
    assert parents(graph, "a#0") == {("a.lm#0", "completion")}
    assert graph["a#0"].meta["inputs"] == {"question": "identity"}
    assert ("a#0", "question") in parents(graph, "b.format#0")  # found by identity, not by name
    (out,) = graph.outputs
    root = graph[out.edges[0].id]
    assert root.name == "Pipeline" and parents(graph, root.id) == {("b#0", "answer")}
    assert root.doc.endswith("Pipeline.forward: Two steps.")
    assert graph.meta["framework_version"] == "test" and graph.meta["inputs"] == {"question": "2+2?"}
    names = set(backward(graph, Feedback(0.0, "wrong")).parameter_names)
    assert names == {"a.instructions", "a.lm.temperature", "b.instructions"}
    assert Graph.from_json(graph.to_json()) == graph


def test_a_value_no_step_produced_is_an_external_input_and_a_text_inside_another_is_matched_by_value(index):
    builder = GraphBuilder("Pipeline", parameter_index=lambda: index)
    builder.feed(ModuleStarted("root", None, MODULE, "Pipeline", {"topic": "cats"}))
    first = predict_call(builder, "p1", "root", "a", {"question": "cats"}, "Cats purr.")
    predict_call(builder, "p2", "root", "b", {"question": f"Summarise: {first['answer']}"}, "ok")
    builder.feed(CallEnded("root", outputs="plain text nobody made"))
    (graph,) = builder.graphs
    assert graph["a#0"].meta["inputs"] == {"question": "identity"}  # the program's own input, passed on
    assert graph["b#0"].meta["inputs"] == {"question": "contains"}
    root = graph[graph.outputs[0].edges[0].id]
    assert [(e.arg, e.via) for e in root.edges] == [("result", "call_tree")]  # nothing matched: the call tree


def test_a_failing_lm_call_is_an_exception_node_that_is_the_output_of_a_top_level_predictor(index):
    builder = GraphBuilder("qa", parameter_index=lambda: index)
    predict_call(builder, "p1", None, "a", {"question": "?"}, None, lm_error=TimeoutError("slow"))
    (graph,) = builder.graphs
    (out,) = graph.outputs
    failed = graph[out.edges[0].id]
    assert failed.kind == "exception" and failed.value == "TimeoutError: slow" and failed.name == "a"
    assert parents(graph, failed.id) == {("a.lm#0", "error")}
    assert graph["a.lm#0"].kind == "exception"
    assert {"a.instructions", "a.lm.temperature"} <= set(backward(graph, Feedback(0.0, "timed out")).parameter_names)


def test_react_tool_calls_hang_on_the_step_that_chose_them_and_the_trajectory_on_every_step():
    code = Parameter("convert.code", "code", "def convert(c):\n    return c * 9 / 5 + 32\n")
    builder = GraphBuilder("agent", parameter_index=lambda: {"tool": [("tool", "__code", code)]})
    builder.feed(ModuleStarted("r", None, REACT, "ReAct", {"question": "20 C?"}, chooser="chooser"))
    step = builder.feed(
        ModuleStarted(
            "s0",
            "r",
            PREDICT,
            "Predict",
            {"question": "20 C?", "trajectory": ""},
            name="react",
            owner="chooser",
            output_fields=("next_tool_name",),
        )
    )
    assert step is None
    builder.feed(CallEnded("s0", fields={"next_tool_name": "convert"}))
    builder.feed(
        ToolStarted("t0", "r", "convert", {"c": 20}, owner="tool", desc="Celsius to F.", source="def x(): ...")
    )
    builder.feed(CallEnded("t0", outputs=68.0))
    builder.feed(
        ModuleStarted(
            "s1",
            "r",
            PREDICT,
            "Predict",
            {"question": "20 C?", "trajectory": "obs 68.0"},
            name="react",
            owner="chooser",
        )
    )
    builder.feed(CallEnded("s1", fields={"next_tool_name": "finish"}))
    builder.feed(ToolStarted("t1", "r", "broken", {}))
    builder.feed(CallEnded("t1", error=ValueError("no")))  # ReAct turns it into an observation
    builder.feed(CallEnded("r", fields={"answer": "68"}))

    (graph,) = builder.graphs
    assert parents(graph, "convert#0") == {("react#0", "next_tool_args"), ("param:convert.code", "__code")}
    assert "def x()" not in graph["convert#0"].doc  # a code parameter feeds it: no source in the doc
    trajectory = graph["react#1"].edges[1].id
    assert parents(graph, trajectory) == {("react#0", "step_0"), ("convert#0", "observation_0")}
    assert graph["broken#0"].kind == "exception" and graph.outputs  # a handled tool error is not the output
    assert graph[graph.outputs[0].edges[0].id].kind == "op"


def test_records_of_calls_outside_any_traced_module_are_ignored():
    builder = GraphBuilder()
    assert builder.feed(LMStarted("lm", "unknown-caller", "m")) is None
    assert builder.feed(CallEnded("lm", ["text"])) is None
    assert builder.feed(CallEnded("never-started")) is None
    assert builder.graphs == []


def test_a_record_that_cannot_be_built_is_noted_in_its_graph_and_the_run_still_ends():
    broken = {"a": [("format", "instructions")]}  # not (stage, arg, parameter): unpacking fails
    builder = GraphBuilder("qa", parameter_index=lambda: broken)
    builder.feed(ModuleStarted("p", None, PREDICT, "Predict", {"question": "?"}, name="a", owner="a"))
    builder.feed(FormatStarted("f", "p", "ChatAdapter"))
    with pytest.raises(ValueError):
        builder.feed(CallEnded("f", []))
    builder.feed(CallEnded("p", fields={"answer": "x"}))
    (graph,) = builder.graphs
    assert graph.meta["trace_errors"] and "ValueError" in graph.meta["trace_errors"][0]
    assert graph.outputs  # the predictor's node was still made from its inputs


def test_the_callback_never_breaks_the_program_and_keeps_the_failure(two_same, echo_lm, monkeypatch):
    tracer = DSPyTracer(two_same)

    def fail(record):
        raise RuntimeError("builder bug")

    monkeypatch.setattr(tracer.builder, "feed", fail)
    with dspy.context(lm=echo_lm, callbacks=[tracer]):
        output = two_same(question="2+2?")
    assert output.answer == "answer<question=answer<question=2+2?>>"
    assert tracer.errors and all("RuntimeError: builder bug" in e for e in tracer.errors)
    assert {e.split(":")[0] for e in tracer.errors} >= {"on_module_start", "on_module_end", "on_lm_start"}
