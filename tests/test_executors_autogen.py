"""An AutoGen AgentChat team under executor="asyncio": its native coroutines, one loop, no thread per example."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("autogen_agentchat", reason="the autogen extra is not installed")

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.replay import ReplayChatCompletionClient

from opto_adapters.autogen import wrap_team
from opto_core.engine.executors import AsyncioExecutor

N = 6


def team_target(seen: list[tuple[int, int]]):
    writer = AssistantAgent(
        "writer",
        ReplayChatCompletionClient([f"draft {i}" for i in range(N)]),
        system_message="You are the writer.",
        description="The writer.",
    )
    critic = AssistantAgent(
        "critic",
        ReplayChatCompletionClient([f"verdict {i}" for i in range(N)]),
        system_message="You are the critic.",
        description="The critic.",
    )
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))

    async def before_run(example):  # runs on the thread that runs the team
        seen.append((threading.get_ident(), threading.active_count()))

    return wrap_team(team, before_run=before_run)


def test_a_team_under_asyncio_runs_every_example_on_the_executor_loop_thread():
    seen: list[tuple[int, int]] = []
    target = team_target(seen)
    assert callable(target.arun)
    executor = AsyncioExecutor(8)
    before = threading.active_count()
    try:
        results = executor.evaluate(
            target,
            [{"task": f"task {i}"} for i in range(N)],
            lambda example, output: float(output.startswith("verdict")),
            indices=list(range(N)),
            failure_score=0.0,
        )
        loop_thread = executor.thread.ident
    finally:
        executor.close()
    assert [r.output for r in results] == [f"verdict {i}" for i in range(N)]  # runs took turns, in order
    assert not any(r.failed for r in results)
    assert {ident for ident, _ in seen} == {loop_thread}  # no thread per example ...
    assert max(count for _, count in seen) <= before + 1  # ... the loop's thread only
    assert len({id(r.graph) for r in results}) == N  # one graph per team run
    assert all(r.graph.by_name("critic.llm") and r.graph.by_name("writer.llm") for r in results)
