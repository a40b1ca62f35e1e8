"""AutoGen in the user's own asyncio flow: ``asyncio.run(team.run(...))`` before, between and after
``optimize``, with the real ``OpenAIChatCompletionClient`` against a scripted server on 127.0.0.1.

Every run is checked on the server side too: after a loop error AgentChat may "succeed" with no model
request at all (``shared/notes/autogen.md``), so a run counts only when the requests arrived.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_helpers import ScriptedOpenAIServer, completion_body, system_of

from opto_adapters.autogen import AgentTarget, OptoAgent, as_target, wrap_team
from opto_core import optimize
from opto_core.engine.executors import InfrastructureError, error_kind
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

pytest.importorskip("autogen_ext.models.openai")

STRICT = "You judge drafts. Answer APPROVED when the draft names a colour."
LOOP_ERRORS = ("Event loop is closed", "bound to a different", "Traceback")


def _reply(body):
    """The writer drafts; the critic approves only under the optimized system message."""
    system = system_of(body) or ""
    if system.startswith("You write"):
        return completion_body("A red kite over the sea.")
    return completion_body("APPROVED" if "APPROVED" in system else "Hmm.")


@pytest.fixture
def server():
    # Clients an earlier test left behind (pooled connections of a closed loop) would be finalized
    # during this test's loops and log openai's own "Event loop is closed": collect them outside any loop.
    gc.collect()
    fake = ScriptedOpenAIServer(_reply)
    yield fake
    fake.close()
    gc.collect()


def _team(server, **client_options):
    client = server.client(temperature=0.7, **client_options)  # one client shared by both agents
    writer = AssistantAgent("writer", client, system_message="You write one sentence.")
    critic = AssistantAgent("critic", client, system_message="You judge drafts.")
    return RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))


def _feedback(example, output):
    return 1.0 if output == "APPROVED" else (0.0, f"the critic said {output!r}; it should approve this draft")


def _optimize(target):
    llm = ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"critic.system_message": STRICT}})])
    return optimize(target, [{"task": "Describe the sea."}], _feedback, OptoPrime(llm=llm), max_steps=1, batch_size=1)


def _user_run(team, server, task="Describe the sea."):
    """The user's own flow: a fresh asyncio.run per call. Returns the messages; the server must have
    received this run's two requests."""
    before = len(server.requests)
    result = asyncio.run(team.run(task=task))
    assert len(server.requests) - before == 2, "the run sent no model request"
    assert result.stop_reason.startswith("Maximum number of messages")
    return [m.content for m in result.messages]


def _clean(capfd, caplog):
    err = capfd.readouterr().err + caplog.text
    assert not any(text in err for text in LOOP_ERRORS), err[-2000:]


def test_wrap_then_user_runs_then_optimize_then_user_runs_again(server, capfd, caplog):
    caplog.set_level(logging.WARNING)
    team = _team(server)
    target = wrap_team(team, output="critic")
    assert _user_run(team, server)[-1] == "Hmm."
    result = _optimize(target)
    assert (result.initial_score, result.best_score) == (0.0, 1.0)
    assert all(not step.get("infrastructure_errors") for step in result.history)
    assert _user_run(team, server)[-1] == "APPROVED"  # the optimized value, through the user's own loop
    assert system_of(server.requests[-1]) == STRICT
    _clean(capfd, caplog)


def _optimize_checked(target, server, llm_calls_per_run):
    """`_optimize`, checking that every run of the loop reached the server and recorded no error."""
    before_graphs, before_requests = len(target.graphs), len(server.requests)
    result = _optimize(target)
    graphs = list(target.graphs)[before_graphs:]
    assert graphs and len(server.requests) - before_requests == llm_calls_per_run * len(graphs)
    assert all(
        not g.of_kind("exception") and len([n for n in g.nodes if n.name.endswith(".llm")]) == llm_calls_per_run
        for g in graphs
    )
    assert all(not step.get("infrastructure_errors") for step in result.history)
    assert (result.initial_score, result.best_score) == (0.0, 1.0)
    return result


def test_the_user_runs_the_team_first_then_wraps_it_then_optimizes_then_runs_again(server, capfd, caplog):
    """The natural order (issue 11 item 5): build, try with asyncio.run, then decide to optimize.
    Wrapping a team that had run used to be refused."""
    caplog.set_level(logging.WARNING)
    team = _team(server)
    # Before wrapping, plain AgentChat allows one asyncio.run (a second fails in AgentChat itself,
    # see test_without_adopting_the_loop_agentchat_still_fails); after wrapping, any number.
    assert _user_run(team, server)[-1] == "Hmm."
    target = wrap_team(team, output="critic")
    _optimize_checked(target, server, llm_calls_per_run=2)
    assert _user_run(team, server)[-1] == "APPROVED"  # the user's own loop, no reset: continues the last run
    assert system_of(server.requests[-1]) == STRICT
    asyncio.run(team.reset())
    assert _user_run(team, server)[-1] == "APPROVED"
    assert len(server.requests[-1]["messages"]) == 3  # system, task, draft: the reset took
    assert target.last_graph.by_name("critic.llm")[0].value == "APPROVED"  # the user's runs are recorded
    _clean(capfd, caplog)


def test_wrapping_after_a_run_keeps_the_conversation_for_the_users_next_run(server, capfd, caplog):
    caplog.set_level(logging.WARNING)
    team = _team(server)
    _user_run(team, server, task="First task.")
    target = wrap_team(team, output="critic")
    _user_run(team, server, task="Second task.")
    assert [n.value for n in target.last_graph.by_name("critic.llm")] == ["Hmm."]  # recorded
    texts = [m["content"] for m in server.requests[-1]["messages"]]  # the critic's request
    assert texts[1:] == ["First task.", "A red kite over the sea.", "Hmm.", "Second task.", "A red kite over the sea."]
    _clean(capfd, caplog)


@pytest.mark.parametrize("wrap", ["as_target", "OptoAgent"])
def test_the_user_runs_an_agent_first_then_optimizes_it_then_runs_again(server, capfd, caplog, wrap):
    caplog.set_level(logging.WARNING)
    critic = AssistantAgent("critic", server.client(temperature=0.7), system_message="You judge drafts.")
    assert asyncio.run(critic.run(task="A red kite.")).messages[-1].content == "Hmm."  # before any wrapping
    assert len(server.requests) == 1
    agent = OptoAgent(critic) if wrap == "OptoAgent" else None
    target = as_target(critic) if agent is None else AgentTarget(agent)
    _optimize_checked(target, server, llm_calls_per_run=1)
    for runner in (target.agent, critic):  # the wrapper, and the inner agent the user still holds
        before = len(server.requests)
        assert asyncio.run(runner.run(task="A red kite.")).messages[-1].content == "APPROVED"
        assert len(server.requests) == before + 1 and system_of(server.requests[-1]) == STRICT
        assert server.requests[-1]["temperature"] == 0.7
    _clean(capfd, caplog)


def test_optimize_first_then_the_user_runs_twice(server, capfd, caplog):
    caplog.set_level(logging.WARNING)
    team = _team(server)
    target = wrap_team(team, output="critic")
    assert _optimize(target).best_score == 1.0
    for _ in range(2):
        asyncio.run(team.reset())
        assert _user_run(team, server)[-1] == "APPROVED"
    _clean(capfd, caplog)


def test_both_orders_twice_with_target_runs_in_between(server, capfd, caplog):
    caplog.set_level(logging.WARNING)
    team = _team(server)
    target = wrap_team(team, output="critic")
    for _ in range(2):
        _user_run(team, server)
        before = len(server.requests)
        output, graph = target.run({"task": "Describe the sea."})
        assert not isinstance(output, BaseException), output
        assert len(server.requests) - before == 2 and not graph.of_kind("exception")
        _optimize(target)
        asyncio.run(team.reset())
        assert _user_run(team, server)[-1] == "APPROVED"
    assert len(target.graphs) >= 6  # the user's runs are recorded as well
    _clean(capfd, caplog)


def test_connection_failures_come_back_as_infrastructure_errors(server):
    team = _team(server)
    target = wrap_team(team, output="critic")
    server.close()  # nobody listens any more
    output, graph = target.run({"task": "Describe the sea."})
    assert isinstance(output, BaseException) and error_kind(output) == "infrastructure", repr(output)
    assert graph.of_kind("exception")


def test_a_failure_before_the_recorded_run_is_the_adapters_and_says_so(server):
    team = _team(server)
    target = wrap_team(team)
    asyncio.run(team.reset())
    team._is_running = True  # the framework refuses to reset a running team: nothing is recorded
    try:
        output, graph = target.run({"task": "x"})
    finally:
        team._is_running = False
    assert isinstance(output, InfrastructureError) and "could not start the run" in str(output)
    assert [n.name for n in graph.of_kind("exception")] == ["autogen.run"]
    assert graph.meta["adapter"] == "opto_adapters.autogen" and graph.meta["framework"] == "autogen-agentchat"
    assert server.requests == []


def test_write_back_errors_are_infrastructure():
    from opto_adapters.autogen import WriteBackError

    assert issubclass(WriteBackError, InfrastructureError)
    assert error_kind(WriteBackError("x")) == "infrastructure"


def test_plain_agentchat_still_fails_on_a_second_event_loop(server):
    """If this starts passing, AutoGen fixed it upstream and the adapter's renewals may go."""
    team = _team(server)
    asyncio.run(team.run(task="x"))
    with pytest.raises(RuntimeError, match="bound to a different event loop"):
        asyncio.run(team.run(task="y"))


def test_an_optoagent_outside_a_team_after_optimizing(server, capfd, caplog):
    caplog.set_level(logging.WARNING)
    agent = OptoAgent(AssistantAgent("critic", server.client(), system_message="You judge drafts."))
    asyncio.run(agent.run(task="one"))
    agent.apply({"critic.system_message": STRICT, "critic.temperature": 0.2})
    assert asyncio.run(agent.run(task="two")).messages[-1].content == "APPROVED"
    assert server.requests[-1]["temperature"] == 0.2
    _clean(capfd, caplog)


def test_a_new_adapter_loop_renews_what_the_old_one_bound(server, capfd, caplog):
    """A forked worker process or a stopped adapter loop: the next run is on a new loop, and the team's
    runtime, output queue and the client's HTTP pool from the old one are renewed before it."""
    from opto_adapters.autogen.eventloop import LOOP

    caplog.set_level(logging.WARNING)
    team = _team(server)
    target = wrap_team(team, output="critic")
    for _ in range(2):
        before = len(server.requests)
        output, graph = target.run({"task": "Describe the sea."})
        assert not isinstance(output, BaseException), output
        assert len(server.requests) - before == 2 and not graph.of_kind("exception")
        LOOP.stop()  # the next run starts a new adapter loop
    assert _user_run(team, server)[-1] == "Hmm."
    _clean(capfd, caplog)
