"""ChainTarget for the shared loop, and whole optimization steps with a scripted optimizer LLM."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda
from lc_chains import output_of, qa_prompt, state_graph, tool_loop_chain

from opto_adapters.langchain import ChainTarget, NoParametersFound, optimize_chain
from opto_adapters.langchain.demo import FIXED_SYSTEM, build_demo, examples, scripted_fix
from opto_adapters.langchain.testing import EchoChatModel
from opto_core.engine.loop import optimize
from opto_core.engine.target import Target
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


def echo_target(**kwargs):
    model = EchoChatModel(reply=lambda messages, call: messages[-1].content.upper())
    chain = qa_prompt() | model | StrOutputParser()
    return ChainTarget(chain, **kwargs), model


def test_run_returns_the_output_and_its_graph():
    target, model = echo_target()
    assert isinstance(target, Target)
    output, graph = target.run({"role": "a bot", "question": "hello", "answer": "HELLO"})
    assert output == "HELLO"
    assert graph.outputs[0].value == "HELLO" and output_of(graph) == "StrOutputParser#0"
    # labels of the example never reach the chain or the trace: the chain's input schema says what it reads
    assert {n.name for n in graph.of_kind("input")} == {"role", "question"}
    assert all("answer" not in json.dumps(n.value) and "answer" not in n.name for n in graph.nodes)
    instance = backward(graph, Feedback(0.0, "wrong"))
    assert {v.name for v in instance.variables} == {
        "prompt.system",
        "prompt.human",
        "model.temperature",
        "model.max_tokens",
    }


def test_a_chain_that_raises_returns_the_exception_and_its_graph():
    def explode(value):
        raise RuntimeError("the parser broke")

    target = ChainTarget(qa_prompt() | EchoChatModel() | RunnableLambda(explode))
    output, graph = target.run({"role": "r", "question": "q"})
    assert isinstance(output, RuntimeError)
    assert graph[output_of(graph)].kind == "exception"
    assert graph[output_of(graph)].value == "RuntimeError: the parser broke"
    assert output_of(graph) == "explode#0" and "def explode(value):" in graph["explode#0"].doc
    instance = backward(graph, Feedback(0.0, "it crashed"))
    assert "prompt.system" in instance.parameter_names


def test_input_preparation():
    target, model = echo_target(input_keys=["role", "question"])
    output, graph = target.run({"role": "r", "question": "hi", "extra": 1})
    assert output == "HI"
    output, graph = target.run({"role": "r"})  # a missing field: reported as the run's failure
    assert isinstance(output, KeyError) and "question" in str(output)
    assert graph.outputs and graph[output_of(graph)].kind == "exception"
    chain = RunnableLambda(lambda text: text[::-1]) | qa_prompt().partial(role="r") | EchoChatModel()
    with pytest.raises(NoParametersFound):
        ChainTarget(RunnableLambda(lambda x: x))  # nothing trainable
    keyed = ChainTarget(
        RunnableLambda(lambda text: {"question": text[::-1]})
        | qa_prompt().partial(role="r")
        | EchoChatModel(reply=lambda m, c: m[-1].content)
        | StrOutputParser(),
        input_key="text",
    )
    assert keyed.run({"text": "abc", "label": "x"})[0] == "cba"
    prepared = ChainTarget(chain | StrOutputParser(), prepare=lambda ex: ex["q"] + "!")
    assert prepared.run({"q": "ab"})[0] == "echo: !ba"


def test_runs_in_threads_do_not_mix():
    target, model = echo_target()
    questions = [f"question number {i}" for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda q: target.run({"role": "r", "question": q}), questions))
    for question, (output, graph) in zip(questions, results):
        assert output == question.upper()
        assert graph.by_name("question")[0].value == question
        assert graph.outputs[0].value == question.upper()


def test_langgraph_target_with_output_fn():
    app, add, model = state_graph()
    target = ChainTarget(app, output_fn=lambda state: state["messages"][2].content)
    output, graph = target.run({"messages": [HumanMessage("what is 1+2")], "expected": "3"})
    assert output == "-1"  # the tool's (buggy) answer
    assert output_of(graph) == "output_fn#0" and graph["output_fn#0"].edges[0].id == "LangGraph#0"
    assert {n.name for n in graph.of_kind("input")} == {"messages"}
    instance = backward(graph, Feedback(0.0, "1 + 2 is 3, the tool said -1"))
    assert "tools.add.code" in instance.parameter_names


# ----- optimization steps with a scripted optimizer ---------------------------------------------------------
def test_demo_one_step_fixes_tool_prompt_and_max_tokens():
    target, trainset, feedback, valset = build_demo()
    # excluded parameters stay visible, frozen (issue 10: one include/exclude rule)
    assert {p.name for p in target.parameters() if p.trainable} == {
        "prompt.system",
        "model.max_tokens",
        "tools.compute_total.code",
    }
    llm = ScriptedLLM([scripted_fix()])
    result = optimize(
        target, trainset, feedback, OptoPrime(target.parameters(), llm), valset, max_steps=1, batch_size=3
    )
    assert result.initial_score == 0.0 and result.best_score == 1.0  # on the held-out examples
    step = result.history[1]
    assert step["kept"] and not step["proposal"]["rejected"]
    assert set(step["proposal"]["accepted"]) == {"tools.compute_total.code", "prompt.system", "model.max_tokens"}
    # the optimizer saw the trace: the buggy code, the cut answers and the feedback
    prompt = llm.requests[0]["messages"][1]["content"]
    assert "return round(subtotal - prices[0] * discount_percent / 100, 2)" in prompt
    assert "compute_total0 = compute_total(tool_call=" in prompt
    assert "Wrong amount" in prompt and "model.max_tokens=4" in prompt
    # the live chain holds the new values and answers every example exactly
    values = {p.name: p.value for p in target.parameters()}
    assert values["prompt.system"] == FIXED_SYSTEM and values["model.max_tokens"] == 64
    for example in examples() + valset:
        assert target.run(example)[0] == example["expected"]


def test_a_rejected_suggestion_leaves_the_chain_untouched():
    target, trainset, feedback, _ = build_demo()
    before = {p.name: p.value for p in target.parameters()}
    bad = json.dumps(
        {
            "reasoning": "r",
            "suggestion": {"prompt.system": "Answer {customer_name} in one line.", "model.max_tokens": 99999},
        }
    )
    llm = ScriptedLLM([bad, bad])
    result = optimize(target, trainset, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2)
    rejected = result.history[1]["proposal"]["rejected"]
    assert "must keep the variable" not in rejected["prompt.system"]
    assert "unknown variable(s) {customer_name}" in rejected["prompt.system"]
    assert "above the upper bound" in rejected["model.max_tokens"]
    assert "{customer_name}" in llm.requests[1]["messages"][-1]["content"]  # the reason went back to the LLM
    assert {p.name: p.value for p in target.parameters()} == before


def test_optimize_chain_on_a_langgraph_graph():
    app, add, model = state_graph()
    trainset = [{"messages": [HumanMessage("what is 1+2")], "expected": "3"}]

    def feedback(example, output):
        return (
            (1.0, "correct")
            if output == example["expected"]
            else (0.0, f"expected {example['expected']}, got {output}")
        )

    code = "def add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n"
    llm = ScriptedLLM([json.dumps({"reasoning": "the tool subtracts", "suggestion": {"tools.add.code": code}})])
    result = optimize_chain(
        app,
        trainset,
        feedback,
        llm=llm,
        include=["tools.*"],
        output_fn=lambda state: state["messages"][2].content,
        max_steps=1,
        batch_size=1,
    )
    assert (result.initial_score, result.best_score) == (0.0, 1.0)
    assert add.invoke({"a": 2, "b": 2}) == 4
    assert "tools.add.code" in llm.requests[0]["messages"][1]["content"]


def test_tool_loop_target_trace_reaches_the_tool_code():
    chain, add, model = tool_loop_chain()
    target = ChainTarget(chain, include=["tools.add.code"])
    output, graph = target.run("what is 1+2")
    instance = backward(graph, Feedback(0.0, "wrong sum"))
    assert instance.parameter_names == ["tools.add.code"]
    assert [n.name for n in instance.code] == ["add", "ToolCallingFakeModel", "agent"]  # downstream of the code
    assert "def agent(question: str) -> str:" in instance.documentation["agent"]
