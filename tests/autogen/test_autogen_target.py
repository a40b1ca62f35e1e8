"""Agents and teams as `Target`s: sync runs from threads and from running loops, the shared loop, and
end-to-end optimization with `opto_core.optimize` (OptoPrime with a scripted LLM)."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_helpers import buggy_add, calculator, plain, replay, request_system, tool_call

from opto_adapters.autogen import AgentTarget, OptoAgent, as_target, task_of
from opto_adapters.autogen.demo import FIXED_CHECK_LENGTH, build_demo, build_team, scripted_fix
from opto_core import optimize
from opto_core.engine.target import Target
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


def _echo_target(name="bot", replies=("a",) * 20):
    client = replay(*replies)
    return AgentTarget(plain(name, client)), client


def test_targets_satisfy_the_protocol():
    target, _ = _echo_target()
    team_target, _, _ = build_demo()
    assert isinstance(target, Target) and isinstance(team_target, Target)
    assert as_target(target.agent) is not target and isinstance(as_target(target.agent), AgentTarget)


def test_sync_run_returns_the_output_text_and_its_graph():
    target, client = _echo_target(replies=("first", "second"))
    output, graph = target.run("hello")
    assert output == "first" and graph.outputs[0].value == "first"
    output, graph = target.run({"task": "again"})
    assert output == "second"
    assert [m.content for m in client.create_calls[1]["messages"][1:]] == ["again"]  # reset between examples
    assert list(target.graphs) == list(target.agent.graphs)


def test_task_of_examples():
    message = TextMessage(content="m", source="user")
    assert task_of("t") == "t" and task_of(message) is message and task_of({"question": "q"}, "question") == "q"
    with pytest.raises(KeyError, match="has no 'task' field"):
        task_of({"question": "q"})
    with pytest.raises(TypeError, match="cannot make a task"):
        task_of(3.5)


def test_run_works_from_inside_a_running_event_loop():
    target, _ = _echo_target(replies=("inside",))

    async def caller():
        return target.run("from async code")  # blocks this loop; the agent runs on the AutoGen loop thread

    output, graph = asyncio.run(caller())
    assert output == "inside" and graph.meta["scope"] == "agent"


async def test_arun_runs_on_the_callers_loop():
    target, _ = _echo_target(replies=("async",))
    output, graph = await target.arun("x")
    assert output == "async" and target.last_graph is graph


def test_runs_from_many_threads_are_serialized_per_target_and_concurrent_across_targets():
    targets = [_echo_target(name=f"bot{i}", replies=tuple(f"{i}:{k}" for k in range(6)))[0] for i in range(2)]

    def work(job):
        index, k = job
        return index, targets[index].run(f"task {k}")

    jobs = [(i, k) for i in range(2) for k in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, jobs))
    for index, (output, graph) in results:
        assert output.startswith(f"{index}:")
        assert len(graph.of_kind("input")) == 1  # reset per run: no other task leaked into the prompt
        assert graph.meta["agents"] == [f"bot{index}"]
    assert sorted(out for i, (out, _) in results if i == 0) == [f"0:{k}" for k in range(6)]


def test_a_failing_run_comes_back_as_exception_and_graph():
    target = AgentTarget(calculator(replay(tool_call("add", a=1, b=1))))  # no reply for the reflection call
    output, graph = target.run("1+1")
    assert isinstance(output, ValueError)
    [exception] = graph.of_kind("exception")
    assert graph.outputs[0].edges[0].id == exception.id


def test_team_target_runs_and_resets():
    target, trainset, feedback_fn = build_demo()
    outputs = [target.run(example)[0] for example in trainset]
    assert outputs[0] == "REJECTED: 37 words (limit 8)"  # the planted bug counts characters
    assert [feedback_fn(e, o)[0] for e, o in zip(trainset, outputs)] == [0.0, 0.0, 0.0, 0.0]
    graph = target.last_graph
    assert graph.meta["turns"] == 2 and graph.meta["messages"] == 5
    assert [n.value for n in graph.of_kind("input")] == [trainset[-1]["task"]]  # only this example's task


def test_optimize_fixes_the_planted_bug_and_the_system_message_in_one_step():
    target, trainset, feedback_fn = build_demo()
    llm = ScriptedLLM([scripted_fix()])
    # isolation="none": the runs happen here, so target.graphs records them (in workers it would not)
    result = optimize(target, trainset, feedback_fn, OptoPrime(llm=llm), max_steps=1, batch_size=4, isolation="none")
    assert result.initial_score == 0.0 and result.best_score == 1.0
    values = {p.name: p.value for p in target.parameters()}
    assert values["critic.tools.check_length.code"] == FIXED_CHECK_LENGTH
    assert values["writer.system_message"].startswith("You write short product taglines. Count")
    # OptoPrime saw the tool's code, the tool run and the feedback
    prompt = llm.requests[0]["messages"][-1]["content"]
    assert "count = len(text)" in prompt and "critic.tools.check_length.code" in prompt
    assert "REJECTED: 37 words (limit 8)" in prompt
    # the write-back was seen on the wire in the evaluation right after the step
    verified = {name for g in target.graphs for name in g.meta.get("write_back_verified", [])}
    assert "writer.system_message" in verified
    output, _ = target.run(trainset[0])
    assert output == "APPROVED: 7 words (limit 8)"


def test_a_proposal_that_breaks_the_tool_schema_is_rejected_and_nothing_changes():
    target, trainset, feedback_fn = build_demo()
    before = {p.name: p.value for p in target.parameters()}
    broken = FIXED_CHECK_LENGTH.replace("limit: int", "limit: str")
    llm = ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"critic.tools.check_length.code": broken}})] * 2)
    result = optimize(target, trainset, feedback_fn, OptoPrime(llm=llm), max_steps=1, batch_size=2)
    rejected = result.history[-1]["proposal"]["rejected"]
    assert "critic.tools.check_length.code" in rejected and "signature" in rejected["critic.tools.check_length.code"]
    assert {p.name: p.value for p in target.parameters()} == before
    assert result.best_score == 0.0


def test_a_step_that_makes_things_worse_is_rolled_back_on_the_live_agents():
    team, script, clients = build_team()
    from opto_adapters.autogen import wrap_team
    from opto_adapters.autogen.demo import EXAMPLES, feedback_fn

    target = wrap_team(team, output="critic", before_run=script)
    fixed = {"critic.tools.check_length.code": FIXED_CHECK_LENGTH}
    target.apply(fixed)  # start from a working tool
    worse = FIXED_CHECK_LENGTH.replace("len(text.split())", "len(text.split()) + 100")
    llm = ScriptedLLM(
        [
            json.dumps(
                {
                    "reasoning": "r",
                    "suggestion": {"critic.tools.check_length.code": worse, "critic.system_message": "Worse."},
                }
            )
        ]
    )
    result = optimize(target, EXAMPLES, feedback_fn, OptoPrime(llm=llm), max_steps=1, batch_size=4)
    assert result.history[-1]["kept"] is False
    values = {p.name: p.value for p in target.parameters()}
    assert (
        values["critic.tools.check_length.code"] == FIXED_CHECK_LENGTH and values["critic.system_message"] != "Worse."
    )
    output, _ = target.run(EXAMPLES[0])
    assert output == "APPROVED: 7 words (limit 8)"  # the live tool is the restored one
    assert request_system(clients["critic"].create_calls[-1]) != "Worse."


def test_agent_target_optimizes_a_single_agents_tool():
    client = replay(*[tool_call("buggy_add", a=2, b=3)] * 10)
    agent = OptoAgent(AssistantAgent("calc", client, tools=[buggy_add], reflect_on_tool_use=False))
    target = AgentTarget(agent, before_run=lambda example: client.reset())
    fixed = 'def buggy_add(a: int, b: int) -> int:\n    """Add two integers."""\n    return a + b\n'
    llm = ScriptedLLM([json.dumps({"reasoning": "it subtracts", "suggestion": {"calc.tools.buggy_add.code": fixed}})])
    result = optimize(
        target,
        [{"task": "2+3"}],
        lambda ex, out: 1.0 if out == "5" else (0.0, f"got {out}, want 5"),
        OptoPrime(llm=llm),
        max_steps=1,
        batch_size=1,
    )
    assert (result.initial_score, result.best_score) == (0.0, 1.0)
    assert target.run({"task": "2+3"})[0] == "5"


def test_the_loop_thread_refuses_to_wait_for_itself():
    from opto_adapters.autogen.eventloop import LOOP

    target, _ = _echo_target()
    target.run("warm up")  # starts the loop thread

    async def inside():
        return target.run("x")

    future = asyncio.run_coroutine_threadsafe(inside(), LOOP.loop)
    with pytest.raises(RuntimeError, match="arun"):
        future.result(timeout=10)
    assert LOOP.thread is not threading.current_thread()
