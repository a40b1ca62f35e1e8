"""OptoAgent behaves like the AssistantAgent it wraps, and records one graph per task run."""

from __future__ import annotations

import asyncio

import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent
from autogen_core import CancellationToken
from autogen_helpers import add, calculator, plain, replay, request_texts, tool_call

from opto_adapters.autogen import OptoAgent
from opto_core import Graph, backward


def _summary(messages):
    return [(type(m).__name__, m.source, m.to_text()) for m in messages]


async def test_run_matches_the_unwrapped_agent():
    script = (tool_call("add", a=2, b=3), "The sum is 5.")
    bare_client, wrapped_client = replay(*script), replay(*script)
    bare = await calculator(bare_client).run(task="What is 2 + 3?")
    agent = OptoAgent(calculator(wrapped_client))
    wrapped = await agent.run(task="What is 2 + 3?")
    assert _summary(wrapped.messages) == _summary(bare.messages)
    assert [type(m).__name__ for m in wrapped.messages] == [
        "TextMessage",
        "ToolCallRequestEvent",
        "ToolCallExecutionEvent",
        "TextMessage",
    ]
    # the model saw the same prompts
    assert [request_texts(c) for c in wrapped_client.create_calls] == [
        request_texts(c) for c in bare_client.create_calls
    ]
    assert agent.name == "calc" and agent.description == "Adds numbers."
    assert list(agent.produced_message_types) == list(agent.agent.produced_message_types)


async def test_run_stream_yields_what_the_agent_yields_and_records_a_graph():
    agent = OptoAgent(calculator(replay(tool_call("add", a=1, b=1), "2")))
    items = [item async for item in agent.run_stream(task="1+1?")]
    assert isinstance(items[-1], TaskResult)
    assert [type(i).__name__ for i in items[:-1]] == [
        "TextMessage",
        "ToolCallRequestEvent",
        "ToolCallExecutionEvent",
        "TextMessage",
    ]
    graph = agent.last_graph
    assert graph is not None and len(agent.graphs) == 1
    assert graph.meta["scope"] == "agent" and graph.meta["llm_calls"] == 2 and graph.meta["turns"] == 1
    assert graph.outputs[0].value == "2"


async def test_on_messages_and_on_messages_stream_delegate():
    agent = OptoAgent(plain("echo", replay("first", "second")))
    with pytest.warns(UserWarning, match="outside a recorded run"):
        response = await agent.on_messages([TextMessage(content="hi", source="user")], CancellationToken())
    assert isinstance(response, Response) and response.chat_message.content == "first"
    items = [
        i async for i in agent.on_messages_stream([TextMessage(content="again", source="user")], CancellationToken())
    ]
    assert isinstance(items[-1], Response) and items[-1].chat_message.content == "second"
    # outside any run each turn is its own graph (with a warning the first time)
    assert len(agent.graphs) == 2 and all(g.meta["scope"] == "turn" for g in agent.graphs)


async def test_one_graph_per_run_and_reset_clears_the_context():
    client = replay("one", "two", "three")
    agent = OptoAgent(plain("bot", client))
    await agent.run(task="first task")
    await agent.run(task="second task")  # no reset: the agent remembers the first exchange
    assert request_texts(client.create_calls[1])[1:] == ["first task", "one", "second task"]
    await agent.on_reset(CancellationToken())
    await agent.run(task="third task")
    assert request_texts(client.create_calls[2])[1:] == ["third task"]
    assert len(agent.graphs) == 3
    assert len({g.meta["run_id"] for g in agent.graphs}) == 3
    # the second run's graph links the remembered messages as context of its call
    second = agent.graphs[1]
    call = second.by_name("bot.llm")[0]
    vias = {second[e.id].value: e.via for e in call.edges if second[e.id].kind != "parameter"}
    assert vias == {"first task": "context", "one": "context", "second task": "context"}


async def test_save_and_load_state_are_the_wrapped_agents():
    agent = OptoAgent(plain("bot", replay("hello")))
    await agent.run(task="remember me")
    state = await agent.save_state()
    assert state["type"] == "AssistantAgentState"
    fresh = plain("bot", replay("x"))
    await fresh.load_state(state)  # an unwrapped agent loads a wrapped agent's state
    assert [m.content for m in await fresh.model_context.get_messages()] == ["remember me", "hello"]
    other = OptoAgent(plain("bot", replay("y")))
    await other.load_state(state)
    assert [m.content for m in await other.model_context.get_messages()] == ["remember me", "hello"]


async def test_graph_round_trips_through_json():
    agent = OptoAgent(calculator(replay(tool_call("add", a=4, b=5), "9")))
    await agent.run(task="4+5")
    graph = agent.last_graph
    assert Graph.from_json(graph.to_json()) == graph


async def test_max_graphs_bounds_the_history():
    agent = OptoAgent(plain("bot", replay("a", "b", "c")), max_graphs=2)
    for task in ("1", "2", "3"):
        await agent.run(task=task)
    assert len(agent.graphs) == 2 and agent.last_graph.outputs[0].value == "c"


async def test_streaming_model_client_is_recorded():
    client = replay("streamed answer")
    agent = OptoAgent(AssistantAgent("s", client, model_client_stream=True, system_message="S."))
    items = [i async for i in agent.run_stream(task="go")]
    chunks = [i for i in items if type(i).__name__ == "ModelClientStreamingChunkEvent"]
    assert chunks, "the replay client streams word by word"
    call = agent.last_graph.by_name("s.llm")[0]
    assert call.value == "streamed answer" and call.meta["usage"]["completion_tokens"] > 0


async def test_feedback_on_a_specific_message():
    agent = OptoAgent(calculator(replay(tool_call("add", a=1, b=2), "It is 3.")))
    result = await agent.run(task="1+2")
    request = next(m for m in result.messages if isinstance(m, ToolCallRequestEvent))
    node_id = agent.mark_message(request)
    instance = backward(agent.last_graph, {node_id: (0.0, "wrong tool arguments")})
    assert node_id in instance.feedback
    names = {v.name for v in instance.variables}
    # the request came from the first call only: its producer's parameters, not the tool's code
    assert "calc.system_message" in names and "calc.tools.add.code" not in names
    with pytest.raises(KeyError, match="no message with id"):
        agent.mark_message("not-a-message-id")


async def test_producer_only_backward_credits_the_own_turn():
    agent = OptoAgent(calculator(replay(tool_call("add", a=1, b=2), "3")))
    await agent.run(task="1+2")
    graph = agent.last_graph
    everything = backward(graph, 0.0)
    producers = backward(graph, 0.0, follow=("data", "call_tree", "control"))
    assert any(n.name == "user.message" for n in everything.inputs)  # the task, via a context edge
    assert not any(n.name == "user.message" for n in producers.inputs)
    # the tool's code is on the producer chain of the reflected answer (same turn => data edges)
    assert "calc.tools.add.code" in {v.name for v in producers.variables}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("an agent", "got builtins.str"),
        (42, "got builtins.int"),
    ],
)
def test_non_agents_are_rejected_clearly(bad, message):
    with pytest.raises(TypeError, match=message):
        OptoAgent(bad)


def test_other_agentchat_agents_and_double_wrapping_are_rejected():
    with pytest.raises(TypeError, match="UserProxyAgent"):
        OptoAgent(UserProxyAgent("human"))
    inner = plain("bot", replay("x"))
    wrapped = OptoAgent(inner)
    with pytest.raises(TypeError, match="already an OptoAgent"):
        OptoAgent(wrapped)
    with pytest.raises(TypeError, match="already wrapped"):
        OptoAgent(inner)


def test_classic_ag2_like_objects_get_a_pointer():
    class ConversableAgent:  # what classic AG2 agents look like (not installed here)
        def register_reply(self, *args):
            pass

    with pytest.raises(TypeError, match="classic AG2"):
        OptoAgent(ConversableAgent())


async def test_unwrap_gives_back_the_real_client():
    client = replay("x")
    inner = plain("bot", client)
    agent = OptoAgent(inner)
    assert inner._model_client is not client
    assert agent.unwrap() is inner and inner._model_client is client


async def test_two_wrapped_agents_run_concurrently_in_separate_tasks():
    first = OptoAgent(calculator(replay(tool_call("add", a=1, b=1), "two"), name="first"))
    second = OptoAgent(calculator(replay(tool_call("add", call_id="c2", a=5, b=5), "ten"), name="second"))

    async def run(agent, task):
        await asyncio.sleep(0)
        return await agent.run(task=task)

    results = await asyncio.gather(run(first, "1+1"), run(second, "5+5"))
    assert results[0].messages[-1].content == "two" and results[1].messages[-1].content == "ten"
    for agent, task, tool_result in ((first, "1+1", "2"), (second, "5+5", "10")):
        graph = agent.last_graph
        assert len(agent.graphs) == 1 and graph.meta["agents"] == [agent.name]
        assert [n.value for n in graph.of_kind("input")] == [task]  # no message of the other run leaked in
        assert [n.value for n in graph.by_name(f"{agent.name}.tool.add")] == [tool_result]


async def test_model_error_gives_an_exception_node_and_the_agent_still_works():
    client = replay(tool_call("add", a=1, b=2))  # the reflection call finds the script exhausted
    agent = OptoAgent(calculator(client))
    with pytest.raises(ValueError, match="No more mock responses"):
        await agent.run(task="1+2")
    graph = agent.last_graph
    [exception] = graph.of_kind("exception")
    assert exception.name == "calc.llm" and "No more mock responses" in exception.value
    assert graph.outputs and graph.outputs[0].edges[0].id == exception.id
    assert any(n.name == "calc.tool.add" and n.value == "3" for n in graph.nodes)  # work done before the error
    instance = backward(graph, "the run failed")
    assert instance.exceptions and "calc.system_message" in {v.name for v in instance.variables}
    client.chat_completions.append("3")
    await agent.on_reset(CancellationToken())
    result = await agent.run(task="1+2")  # same agent, next run fine
    assert result.messages[-1].content == "3"


async def test_tool_execution_nodes_record_arguments_and_errors():
    def fails(x: int) -> int:
        """Always fails."""
        raise ValueError(f"bad {x}")

    client = replay(tool_call("fails", x=7), "sorry")
    agent = OptoAgent(AssistantAgent("t", client, tools=[fails], reflect_on_tool_use=True))
    result = await agent.run(task="go")
    execution = next(m for m in result.messages if isinstance(m, ToolCallExecutionEvent))
    assert execution.content[0].is_error
    [run] = agent.last_graph.by_name("t.tool.fails")
    assert run.meta["is_error"] is True and run.meta["arguments"] == '{"x": 7}' and "bad 7" in run.value
    assert {e.arg for e in run.edges} == {"arguments", "code"}


def test_add_is_a_plain_tool():
    assert add(2, 3) == 5  # the helper tool is correct (other tests rely on its results)
