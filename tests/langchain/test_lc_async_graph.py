"""A LangGraph app whose nodes are all ``async def``: LangGraph refuses ``invoke``, so ``ChainTarget.run``
(the threads executor, `opto_core.coverage`) runs it through ``ainvoke`` on one background loop, traced
the same way, and says so once."""

from __future__ import annotations

import logging
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from opto_adapters.langchain import ChainTarget, _compat
from opto_core import OptoPrime, Parameter, coverage, optimize
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.testing import ScriptedLLM
from opto_core.testing.scripted_server import ScriptedServer, system_text


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@pytest.fixture
def server():
    with ScriptedServer() as scripted:
        yield scripted


def async_app(server, instructions: Parameter):
    model = ChatOpenAI(base_url=server.base_url, api_key="scripted", model="scripted", max_retries=0)

    async def agent(state: State) -> dict:
        return {"messages": [await model.ainvoke([SystemMessage(instructions.value), *state["messages"]])]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile()


def last(state):
    return state["messages"][-1].content


def test_invoke_of_async_nodes_is_what_langgraph_refuses(server):
    instructions = Parameter("agent.instructions", "text", "Answer in one word.", meta={"used_by": "agent"})
    with pytest.raises(TypeError) as refused:
        async_app(server, instructions).invoke({"messages": [HumanMessage("Hi")]})
    assert _compat.needs_async_api(refused.value)  # fails when LangGraph words or types it differently


def test_run_of_an_async_only_graph_goes_through_ainvoke_traced(server, caplog):
    instructions = Parameter("agent.instructions", "text", "Answer in one word.", meta={"used_by": "agent"})
    target = ChainTarget(async_app(server, instructions), [instructions], output_fn=last)
    server.script("Hello.", "Bye.", "Yes.")
    with caplog.at_level(logging.INFO, logger="opto"):
        output, graph = target.run({"messages": [HumanMessage("Hi")]})
        second, _ = target.run({"messages": [HumanMessage("Go")]})
    assert (output, second) == ("Hello.", "Bye.")
    assert sum("has async nodes only" in r.getMessage() for r in caplog.records) == 1  # said once
    assert "agent.instructions" in backward(graph, Feedback(0.0, "too short")).parameter_names
    target.apply({"agent.instructions": "Answer in two words."})
    target.run({"messages": [HumanMessage("Again")]})
    assert system_text(server.requests[-1]) == "Answer in two words."


def test_an_async_only_graph_is_optimized_with_the_threads_executor(server):
    instructions = Parameter("agent.instructions", "text", "Answer in one word.", meta={"used_by": "agent"})
    target = ChainTarget(async_app(server, instructions), [instructions], output_fn=last)
    server.script(*(["ok"] * 12))
    examples = [{"messages": [HumanMessage(f"Question {i}")]} for i in range(2)]
    assert coverage(target, examples)["agent.instructions"].reached
    llm = ScriptedLLM(['{"reasoning": "be precise", "suggestion": {"agent.instructions": "Answer precisely."}}'])
    result = optimize(
        target,
        examples,
        lambda example, output: 1.0 if output == "ok" else 0.0,
        OptoPrime(target.parameters(), llm),
        max_steps=1,
        batch_size=2,
        executor="threads",
        concurrency=2,
    )
    assert result.stopped_reason == "max_steps" and not result.failed
    assert not result.history[1].get("infrastructure_errors")  # every run went through ainvoke
    assert instructions.value == "Answer precisely."
