"""Teams: wrapped agents inside RoundRobinGroupChat and SelectorGroupChat, one graph per team run."""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken, SingleThreadedAgentRuntime
from autogen_helpers import calculator, plain, replay, request_texts, tool_call

from opto_adapters.autogen import OptoAgent, TeamTarget, wrap_team
from opto_adapters.autogen.tracing import RecordingClient
from opto_core.kernel.backward import backward


def _edges(graph, node):
    return {(graph[e.id].name, e.via) for e in node.edges}


def _round_robin(writer_client, critic_client, turns=3):
    writer = calculator(writer_client, name="writer", system_message="You are the writer.")
    critic = plain("critic", critic_client, "You are the critic.")
    return RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(turns))


async def test_round_robin_team_of_two_gives_one_graph_with_producer_and_context_edges():
    writer_client = replay(tool_call("add", a=2, b=2), "Two plus two is 4.")
    critic_client = replay("Correct.")
    team = _round_robin(writer_client, critic_client)
    target = wrap_team(team)
    result = await team.run(task="What is 2+2?")
    assert [m.source for m in result.messages] == ["user", "writer", "writer", "writer", "critic"]
    assert len(target.graphs) == 1
    graph = target.last_graph
    assert graph.meta["scope"] == "team" and graph.meta["agents"] == ["critic", "writer"]
    assert graph.meta["team_type"] == "RoundRobinGroupChat" and graph.meta["llm_calls"] == 3
    # each agent keeps the team graph too
    assert target.agents["writer"].last_graph is graph and target.agents["critic"].last_graph is graph

    [critic_call] = graph.by_name("critic.llm")
    assert _edges(graph, critic_call) >= {
        ("critic.system_message", "data"),
        ("user.message", "context"),
        ("writer.message", "context"),
    }
    # the critic never saw the writer's tool events (AgentChat sends others only the final message)
    assert not any(name.startswith("writer.tool") for name, _ in _edges(graph, critic_call))
    [critic_message] = graph.by_name("critic.message")
    assert _edges(graph, critic_message) == {("critic.llm", "data")}
    assert graph.outputs[0].edges[0].id == critic_message.id

    writer_calls = graph.by_name("writer.llm")
    assert ("writer.tool_results", "data") in _edges(graph, writer_calls[1])  # own turn: producer chain
    [tool] = graph.by_name("writer.tool.add")
    assert _edges(graph, tool) == {("writer.tool_request", "data"), ("writer.tools.add.code", "data")}

    # feedback on the critic's answer reaches every agent's parameters through context ...
    everything = {v.name for v in backward(graph, 0.0).variables}
    assert {"critic.system_message", "writer.system_message", "writer.tools.add.code"} <= everything
    # ... and only the critic's own when credit follows producers
    producers = {v.name for v in backward(graph, 0.0, follow=("data", "call_tree", "control")).variables}
    assert producers == {"critic.system_message", "critic.temperature"}


async def test_feedback_on_the_writers_message_in_a_team():
    team = _round_robin(replay(tool_call("add", a=1, b=1), "It is 2."), replay("Fine."))
    target = wrap_team(team, output="writer")  # the writer's last message is the output
    result = await team.run(task="1+1")
    graph = target.last_graph
    writer_last = [m for m in result.messages if m.source == "writer"][-1]
    assert graph.outputs[0].edges[0].id == f"msg:{writer_last.id}"
    names = {v.name for v in backward(graph, 0.0).variables}
    assert "writer.tools.add.code" in names and "critic.system_message" not in names


async def test_wrapped_team_runs_like_the_unwrapped_team():
    def build():
        return _round_robin(replay(tool_call("add", a=3, b=4), "7"), replay("ok"))

    bare = await build().run(task="3+4")
    wrapped_team = build()
    wrap_team(wrapped_team)
    wrapped = await wrapped_team.run(task="3+4")
    assert [(type(m).__name__, m.source, m.to_text()) for m in wrapped.messages] == [
        (type(m).__name__, m.source, m.to_text()) for m in bare.messages
    ]
    assert wrapped.stop_reason == bare.stop_reason


async def test_team_reset_between_runs_and_state_round_trip():
    writer_client = replay(tool_call("add", a=1, b=2), "3", tool_call("add", call_id="c9", a=5, b=5), "10")
    critic_client = replay("good", "good again")
    team = _round_robin(writer_client, critic_client)
    target = wrap_team(team)
    await team.run(task="1+2")
    state = await team.save_state()
    assert set(state["agent_states"]) >= {"writer", "critic"}
    assert state["agent_states"]["writer"]["agent_state"]["type"] == "AssistantAgentState"
    await team.reset()
    await team.run(task="5+5")
    assert request_texts(critic_client.create_calls[1])[1:] == ["5+5", "10"]  # nothing of the first run
    assert len(target.graphs) == 2
    second = target.graphs[1]
    assert [n.value for n in second.of_kind("input")] == ["5+5"]
    # the saved state loads into a fresh (unwrapped) team of the same shape
    fresh = _round_robin(replay("x"), replay("y"))
    await fresh.load_state(state)
    assert (await fresh.save_state())["agent_states"]["writer"] == state["agent_states"]["writer"]


async def test_selector_team_records_the_selector_call_and_its_control_edge():
    selector_client = replay("writer", "critic")
    writer = plain("writer", replay("A draft."), "You write.")
    critic = plain("critic", replay("Looks fine."), "You criticise.")
    team = SelectorGroupChat(
        [writer, critic],
        model_client=selector_client,
        allow_repeated_speaker=True,
        termination_condition=MaxMessageTermination(3),
    )
    target = wrap_team(team)
    result = await team.run(task="Write something.")
    assert [m.source for m in result.messages] == ["user", "writer", "critic"]
    graph = target.last_graph
    selector_calls = graph.by_name("selector.llm")
    assert [c.value for c in selector_calls] == ["writer", "critic"]
    assert selector_calls[0].meta["role"] == "selector"
    [writer_call], [critic_call] = graph.by_name("writer.llm"), graph.by_name("critic.llm")
    assert (selector_calls[0].id, "control") in {(e.id, e.via) for e in writer_call.edges}
    assert (selector_calls[1].id, "control") in {(e.id, e.via) for e in critic_call.edges}
    # the second selection read the transcript so far (context edges to the chat messages)
    assert {"user.message", "writer.message"} <= {
        graph[e.id].name for e in selector_calls[1].edges if e.via == "context"
    }
    # the selector's client is recorded but still the real one underneath
    assert len(selector_client.create_calls) == 2


async def test_unwrapped_participants_are_recorded_as_inputs():
    writer = plain("writer", replay("Draft."), "You write.")
    reviewer = AssistantAgent("reviewer", replay("Review."), system_message="You review.")
    team = RoundRobinGroupChat(
        [writer, reviewer, OptoAgent(plain("editor", replay("Edited.")))],
        termination_condition=MaxMessageTermination(4),
    )
    target = wrap_team(team)
    assert set(target.agents) == {"writer", "reviewer", "editor"}  # AssistantAgents all wrapped
    await team.run(task="go")
    assert target.last_graph.meta["agents"] == ["editor", "reviewer", "writer"]


async def test_non_assistant_participants_stay_unwrapped_and_show_as_inputs():
    from autogen_agentchat.agents import UserProxyAgent

    human = UserProxyAgent("human", input_func=lambda prompt: "Please be brief.")
    writer = plain("writer", replay("Brief draft."), "You write.")
    team = RoundRobinGroupChat([human, writer], termination_condition=MaxMessageTermination(3))
    target = wrap_team(team)
    assert set(target.agents) == {"writer"} and team._participants[0] is human
    await team.run(task="go")
    graph = target.last_graph
    [human_message] = graph.by_name("human.message")
    assert human_message.kind == "input" and human_message.value == "Please be brief."
    [call] = graph.by_name("writer.llm")
    assert (human_message.id, "context") in {(e.id, e.via) for e in call.edges}


async def _error_then_rerun(team, writer_client, critic_client):
    with pytest.raises(RuntimeError, match="No more mock responses"):
        await team.run(task="go")
    writer_client.chat_completions.append("draft two")
    critic_client.chat_completions.append("fine")
    await team.reset()
    result = await team.run(task="go again")
    return [(m.source, m.to_text()) for m in result.messages], result.stop_reason


async def test_model_error_mid_conversation_leaves_the_team_consistent():
    # what AgentChat itself does after such an error (the reference the wrapped team must match)
    bare_writer, bare_critic = replay("draft one"), replay()
    reference = await _error_then_rerun(_round_robin(bare_writer, bare_critic), bare_writer, bare_critic)

    writer_client = replay("draft one")
    critic_client = replay()  # the critic's model fails on its first call
    team = _round_robin(writer_client, critic_client)
    target = wrap_team(team)
    before = {p.name: p.value for p in target.parameters()}
    with pytest.raises(RuntimeError, match="No more mock responses"):
        await team.run(task="go")
    graph = target.last_graph
    [exception] = graph.of_kind("exception")
    assert exception.name == "critic.llm" and "No more mock responses" in exception.value
    assert graph.by_name("writer.message")[0].value == "draft one"  # what happened before the error is kept
    assert {graph[e.id].name for e in exception.edges} >= {"critic.system_message", "writer.message"}
    assert "critic.system_message" in {v.name for v in backward(graph, "failed").variables}
    # consistent: not running, agents detached, parameters unchanged, and it runs again after reset
    assert not team._is_running and all(a._bound is None for a in target.agents.values())
    assert {p.name: p.value for p in target.parameters()} == before
    writer_client.chat_completions.append("draft two")
    critic_client.chat_completions.append("fine")
    await team.reset()
    result = await team.run(task="go again")
    assert ([(m.source, m.to_text()) for m in result.messages], result.stop_reason) == reference
    assert ("writer", "draft two") in reference[0]
    assert len(target.graphs) == 2 and not target.last_graph.of_kind("exception")
    assert target.last_graph.by_name("writer.message")[0].value == "draft two"


async def test_wrapping_errors_are_clear():
    with pytest.raises(TypeError, match="BaseGroupChat"):
        TeamTarget(plain("solo", replay("x")))
    # A team on a runtime the user passed, once it registered its agents there, cannot be re-registered.
    runtime = SingleThreadedAgentRuntime()
    team = RoundRobinGroupChat(
        [plain("writer", replay("a")), plain("critic", replay("b"))],
        termination_condition=MaxMessageTermination(3),
        runtime=runtime,
    )
    runtime.start()  # the user runs a runtime they pass
    await team.reset()  # registers the participants with the user's runtime
    await runtime.stop_when_idle()
    with pytest.raises(RuntimeError, match="runtime you passed"):
        wrap_team(team)
    assert [type(p) for p in team._participants] == [AssistantAgent, AssistantAgent]  # nothing was changed
    assert not any(isinstance(p._model_client, RecordingClient) for p in team._participants)
    fresh = _round_robin(replay("a"), replay("b"))
    assert wrap_team(fresh) is wrap_team(fresh)
    with pytest.raises(ValueError, match="already wrapped"):
        TeamTarget(fresh)


async def test_an_optimized_team_saves_as_a_plain_agentchat_team():
    selector_client = replay("writer")
    team = SelectorGroupChat(
        [plain("writer", replay("x")), calculator(replay("y"), name="critic")],
        model_client=selector_client,
        termination_condition=MaxMessageTermination(2),
    )
    target = wrap_team(team)
    target.apply(
        {
            "writer.system_message": "Optimized.",
            "critic.tools.add.code": "def add(a: int, b: int) -> int:\n    return b + a\n",
        }
    )
    config = team.dump_component()
    with pytest.warns(UserWarning, match="SECURITY WARNING"):  # AgentChat execs saved tool code on load
        loaded = SelectorGroupChat.load_component(config)  # no OptoAgent or recorder in the saved form
    writer, critic = loaded._participants
    assert type(writer) is AssistantAgent and writer._system_messages[0].content == "Optimized."
    assert await critic._workbench[0]._tools[0].run_json({"a": 2, "b": 5}, CancellationToken()) == 7
    assert type(loaded._model_client).__name__ == "ReplayChatCompletionClient"


async def test_agents_of_a_nested_team_join_the_outer_run_graph():
    inner = RoundRobinGroupChat(
        [plain("drafter", replay("inner draft")), plain("checker", replay("inner ok"))],
        termination_condition=MaxMessageTermination(2),
    )
    outer = RoundRobinGroupChat(
        [inner, plain("editor", replay("edited"))], termination_condition=MaxMessageTermination(4)
    )
    target = wrap_team(outer)
    assert set(target.agents) == {"drafter", "checker", "editor"}
    await outer.run(task="go")
    graph = target.last_graph
    assert graph.meta["agents"] == ["checker", "drafter", "editor"]
    [editor_call] = graph.by_name("editor.llm")
    assert {graph[e.id].value for e in editor_call.edges if e.via == "context"} >= {"go", "inner draft"}


# ----- wrapping a team that already ran (issue 11 item 5: this order used to be refused) ---------
async def test_a_team_that_already_ran_is_wrapped_and_keeps_its_conversation():
    writer_client, critic_client = replay("draft one", "draft two"), replay("meh", "better")
    team = _round_robin(writer_client, critic_client)
    first = await team.run(task="Write.")  # the user's own run, before wrapping
    assert [m.to_text() for m in first.messages] == ["Write.", "draft one", "meh"]
    target = wrap_team(team, output="critic")
    target.apply({"critic.system_message": "You are the strict critic."})
    second = await team.run(task="Again.")
    assert [m.to_text() for m in second.messages] == ["Again.", "draft two", "better"]
    # the wrapped agents ran (the runtime holds them now) and every call was recorded
    graph = target.last_graph
    assert len(target.graphs) == 1 and graph.meta["agents"] == ["critic", "writer"]
    assert [n.value for n in graph.by_name("critic.llm")] == ["better"]
    assert target.agents["critic"].last_graph is graph
    # the conversation of the first run was kept: the critic's prompt holds it, under the new system message
    assert request_texts(critic_client.create_calls[1]) == [
        "You are the strict critic.",
        "Write.",
        "draft one",
        "meh",
        "Again.",
        "draft two",
    ]
    assert {n.value for n in graph.of_kind("input")} >= {"Write.", "draft one", "Again."}
    [answer] = [n for n in graph.by_name("critic.message") if n.kind == "op"]  # "meh" is an earlier input
    assert graph.outputs[0].edges[0].id == answer.id and answer.value == "better"
    assert "output_message_id" not in graph.meta  # the output is marked in the graph only
    # target runs reset the team as before
    writer_client.chat_completions.append("draft three")
    critic_client.chat_completions.append("fine")
    output, _ = await target.arun({"task": "Third."})
    assert output == "fine"
    assert request_texts(critic_client.create_calls[2]) == ["You are the strict critic.", "Third.", "draft three"]


async def test_a_reset_team_and_its_saved_state_after_wrapping():
    team = _round_robin(replay("draft"), replay("ok"))
    await team.reset()  # initialized without a run
    target = wrap_team(team)
    state = await team.save_state()  # before the next run: served by the old registration, same agents
    assert set(state["agent_states"]) >= {"writer", "critic"}
    await team.run(task="Go.")
    assert [n.value for n in target.last_graph.by_name("writer.llm")] == ["draft"]


async def test_a_selector_team_that_already_ran_records_its_selector_after_wrapping():
    selector_client = replay("writer", "critic", "writer", "critic")
    team = SelectorGroupChat(
        [plain("writer", replay("A draft.", "Draft two.")), plain("critic", replay("Fine.", "Fine again."))],
        model_client=selector_client,
        allow_repeated_speaker=True,
        termination_condition=MaxMessageTermination(3),
    )
    await team.run(task="Write.")
    target = wrap_team(team)
    result = await team.run(task="Once more.")
    assert [m.to_text() for m in result.messages] == ["Once more.", "Draft two.", "Fine again."]
    graph = target.last_graph
    assert [c.value for c in graph.by_name("selector.llm")] == ["writer", "critic"]
    assert [c.value for c in graph.by_name("writer.llm")] == ["Draft two."]


async def test_a_nested_team_that_already_ran_joins_the_outer_graph():
    def build():
        inner = RoundRobinGroupChat(
            [plain("drafter", replay("d1", "d2")), plain("checker", replay("c1", "c2"))],
            termination_condition=MaxMessageTermination(2),
        )
        return RoundRobinGroupChat(
            [inner, plain("editor", replay("e1", "e2", "e3"))], termination_condition=MaxMessageTermination(4)
        )

    bare = build()
    await bare.run(task="go")
    expected = [m.to_text() for m in (await bare.run(task="again")).messages]
    outer = build()
    await outer.run(task="go")
    target = wrap_team(outer)
    assert set(target.agents) == {"drafter", "checker", "editor"}
    result = await outer.run(task="again")
    assert [m.to_text() for m in result.messages] == expected  # as the unwrapped team, state carried over
    graph = target.last_graph
    assert [n.value for n in graph.by_name("drafter.llm")] == ["d2"]
    assert [n.value for n in graph.by_name("editor.llm")] == ["e2", "e3"]


async def test_apply_values_into_a_team_that_already_ran():
    from opto_adapters.autogen import apply_values

    critic_client = replay("meh", "better")
    team = _round_robin(replay("draft one", "draft two"), critic_client)
    await team.run(task="Write.")
    assert apply_values(team, {"critic.system_message": "Be strict."}) == {"critic.system_message": "Be strict."}
    await team.run(task="Again.")
    assert request_texts(critic_client.create_calls[1])[0] == "Be strict."
