"""Parameters of a wrapped agent: discovery, write-back seen in the next recorded request, undo, checks."""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import SystemMessage
from autogen_helpers import buggy_add, calculator, plain, replay, request_system, tool_call

from opto_adapters.autogen import OptoAgent, WriteBackError, wrap_team
from opto_core.kernel.parameters import InvalidValue

Num = int  # an annotation alias used by a tool below

FIXED_ADD = '''def buggy_add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''


def _by_name(agent):
    return {p.name: p for p in agent.parameters()}


def test_parameters_of_an_agent():
    agent = OptoAgent(calculator(replay("x")))
    params = _by_name(agent)
    assert set(params) == {
        "calc.system_message",
        "calc.tools.add.code",
        "calc.tools.add.description",
        "calc.temperature",
    }
    assert params["calc.system_message"].kind == "text"
    assert params["calc.system_message"].value == "You add numbers with your tool."
    code = params["calc.tools.add.code"]
    assert code.kind == "code" and code.value.startswith("def add(a: int, b: int) -> int:")
    assert params["calc.tools.add.description"].value == "Add two integers."
    temperature = params["calc.temperature"]
    assert temperature.kind == "float" and (temperature.lower, temperature.upper) == (0.0, 2.0)
    assert all(p.trainable for p in params.values())


def test_trainable_switches_and_client_temperature():
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    client = OpenAIChatCompletionClient(
        model="local",
        base_url="http://127.0.0.1:9/v1",
        api_key="x",
        temperature=0.3,
        model_info={
            "function_calling": True,
            "vision": False,
            "json_output": False,
            "family": "unknown",
            "structured_output": False,
        },
    )
    agent = OptoAgent(AssistantAgent("a", client, system_message="S."), temperature=False, system_message=False)
    params = _by_name(agent)
    assert params["a.temperature"].value == 0.3 and not params["a.temperature"].trainable
    assert not params["a.system_message"].trainable


async def test_write_back_is_seen_in_the_next_recorded_request():
    client = replay("first", tool_call("add", a=1, b=2), "done")
    agent = OptoAgent(calculator(client))
    await agent.run(task="hello")
    agent.apply(
        {"calc.system_message": "Be terse.", "calc.temperature": 0.25, "calc.tools.add.description": "Adds a and b."}
    )
    await agent.on_reset(CancellationToken())
    await agent.run(task="1+2")
    request = client.create_calls[1]
    assert request_system(request) == "Be terse."
    assert request["extra_create_args"] == {"temperature": 0.25}
    assert [t["description"] for t in request["tools"]] == ["Adds a and b."]
    assert client.create_calls[0]["extra_create_args"] == {}  # nothing sent before a write
    graph = agent.last_graph
    assert graph.meta["write_back_verified"] == [
        "calc.system_message",
        "calc.temperature",
        "calc.tools.add.description",
    ]
    first_call = graph.by_name("calc.llm")[0]
    assert first_call.meta["settings"]["temperature"] == 0.25
    assert graph["param:calc.system_message"].value == "Be terse."


async def test_tool_code_write_back_really_runs_and_undo_restores_everything():
    client = replay(
        tool_call("buggy_add", a=2, b=3),
        "sum",
        tool_call("buggy_add", a=2, b=3),
        "sum",
        tool_call("buggy_add", a=2, b=3),
        "sum",
    )
    inner = AssistantAgent("calc", client, tools=[buggy_add], reflect_on_tool_use=True, system_message="Old.")
    agent = OptoAgent(inner)
    await agent.run(task="2+3")
    assert agent.last_graph.by_name("calc.tool.buggy_add")[0].value == "-1"
    original_tool = inner._tools[0]
    snapshot = agent.snapshot()
    agent.apply({"calc.tools.buggy_add.code": FIXED_ADD, "calc.system_message": "New."})
    assert inner._tools[0] is not original_tool and inner._workbench[0]._tools[0] is inner._tools[0]
    await agent.on_reset(CancellationToken())
    await agent.run(task="2+3")
    assert agent.last_graph.by_name("calc.tool.buggy_add")[0].value == "5"
    assert request_system(client.create_calls[2]) == "New."
    assert _by_name(agent)["calc.tools.buggy_add.code"].value == FIXED_ADD
    # the optimized agent saves with its new code (the recompiled source is readable)
    config = agent.dump_component().config
    assert "return a + b" in config["workbench"][0]["config"]["tools"][0]["config"]["source_code"]
    assert config["system_message"] == "New."
    assert config["model_client"]["provider"].endswith("ReplayChatCompletionClient")

    agent.restore(snapshot)
    assert inner._tools[0] is original_tool and inner._workbench[0]._tools[0] is original_tool
    assert _by_name(agent)["calc.system_message"].value == "Old."
    await agent.on_reset(CancellationToken())
    await agent.run(task="2+3")
    assert agent.last_graph.by_name("calc.tool.buggy_add")[0].value == "-1"
    assert request_system(client.create_calls[4]) == "Old."
    assert "calc.system_message" in agent.last_graph.meta["write_back_verified"]


async def test_restore_drops_a_temperature_that_was_not_set_before():
    client = replay("a", "b")
    agent = OptoAgent(plain("bot", client))
    snapshot = agent.snapshot()
    agent.apply({"bot.temperature": 1.5})
    await agent.run(task="x")
    agent.restore(snapshot)
    await agent.run(task="y")
    assert client.create_calls[0]["extra_create_args"] == {"temperature": 1.5}
    assert client.create_calls[1]["extra_create_args"] == {}
    assert _by_name(agent)["bot.temperature"].value == 1.0


def test_code_that_changes_the_tool_schema_is_rejected_before_anything_is_written():
    agent = OptoAgent(calculator(replay("x")))
    code = _by_name(agent)["calc.tools.add.code"]
    before = agent.agent._tools[0]
    renamed_argument = "def add(a: int, c: int) -> int:\n    return a + c\n"
    with pytest.raises(InvalidValue, match="signature must stay"):
        code.validate(renamed_argument)
    with pytest.raises(InvalidValue, match="keep its name"):
        code.validate("def plus(a: int, b: int) -> int:\n    return a + b\n")
    failing_import = "import not_a_module_xyz\n\ndef add(a: int, b: int) -> int:\n    return a + b\n"
    with pytest.raises(InvalidValue, match="imports 'not_a_module_xyz'"):  # the code policy refuses it first
        code.validate(failing_import)
    code.code_policy = "permissive"
    with pytest.raises(InvalidValue, match="fails when defined"):  # the adapter's own check, behind the policy
        code.validate(failing_import)
    code.code_policy = "strict"
    with pytest.raises(InvalidValue, match="does not parse"):
        code.validate("def add(a: int, b: int) -> int:\n    return a +\n")
    assert agent.agent._tools[0] is before
    assert code.validate("def add(a: int, b: int) -> int:\n    return b + a\n").endswith("return b + a\n")


def scale(x: Num) -> Num:
    """Scale a number."""
    return x * 2


def test_schema_check_catches_what_the_signature_text_does_not():
    # the same signature text can mean another schema: here an import rebinds the annotation's name
    agent = OptoAgent(AssistantAgent("s", replay("x"), tools=[scale]))
    code = _by_name(agent)["s.tools.scale.code"]
    assert code.trainable
    rebinds = "from builtins import str as Num\n\ndef scale(x: Num) -> Num:\n    return x * 2\n"
    with pytest.raises(InvalidValue, match="JSON schema changed"):
        code.validate(rebinds)
    assert code.validate("def scale(x: Num) -> Num:\n    return x + x\n").endswith("x + x\n")


def test_closures_and_lambdas_are_not_rewritable():
    offset = 3

    def shifted(x: int) -> int:
        """Shift."""
        return x + offset

    agent = OptoAgent(AssistantAgent("c", replay("x"), tools=[shifted]))
    params = _by_name(agent)
    assert not params["c.tools.shifted.code"].trainable  # it reads a variable of the test function
    assert "enclosing function" in params["c.tools.shifted.code"].description
    assert params["c.tools.shifted.description"].trainable


def test_empty_description_and_unknown_names_are_rejected():
    agent = OptoAgent(calculator(replay("x")))
    with pytest.raises(InvalidValue, match="must not be empty"):
        _by_name(agent)["calc.tools.add.description"].validate("  ")
    with pytest.raises(InvalidValue, match="above the upper bound"):
        _by_name(agent)["calc.temperature"].validate(3.0)
    with pytest.raises(KeyError, match=r"unknown parameters \['calc.nope'\].*calc.system_message"):
        agent.apply({"calc.nope": 1})
    before = agent.snapshot()
    with pytest.raises(KeyError):
        agent.params.apply({"calc.system_message": "x", "calc.nope": 1})
    assert agent.agent._system_messages == before["calc.system_message"][0]  # nothing written


async def test_a_write_that_does_not_reach_the_request_fails_the_run_loudly():
    client = replay("never sent")
    agent = OptoAgent(plain("bot", client, "Original."))
    agent.apply({"bot.system_message": "Applied."})
    agent.agent._system_messages = [SystemMessage(content="Overwritten behind our back.")]
    with pytest.raises(WriteBackError, match="not the applied value 'Applied.'"):
        await agent.run(task="x")
    assert client.create_calls == []  # the request never left
    [exception] = agent.last_graph.of_kind("exception")
    assert exception.name == "bot.llm" and "WriteBackError" in exception.value


async def test_write_back_inside_a_team_reaches_the_next_team_run():
    writer_client, critic_client = replay("draft", "draft 2"), replay("ok", "ok 2")
    team = RoundRobinGroupChat(
        [plain("writer", writer_client), plain("critic", critic_client)], termination_condition=MaxMessageTermination(3)
    )
    target = wrap_team(team)
    await team.run(task="go")
    snapshot = target.snapshot()
    target.apply({"critic.system_message": "Be harsh.", "writer.temperature": 0.1})
    await team.reset()
    await team.run(task="go")
    assert request_system(critic_client.create_calls[1]) == "Be harsh."
    assert writer_client.create_calls[1]["extra_create_args"] == {"temperature": 0.1}
    assert critic_client.create_calls[1]["extra_create_args"] == {}  # per agent, not per client
    assert set(target.last_graph.meta["write_back_verified"]) == {"critic.system_message", "writer.temperature"}
    target.restore(snapshot)
    assert {p.name: p.value for p in target.parameters()}["critic.system_message"] == "You are critic."
    with pytest.raises(KeyError, match="unknown parameters"):
        target.apply({"editor.system_message": "x"})


async def test_agents_sharing_one_client_get_their_own_temperature():
    shared = replay("w", "c")
    team = RoundRobinGroupChat(
        [plain("writer", shared), plain("critic", shared)], termination_condition=MaxMessageTermination(3)
    )
    target = wrap_team(team)
    target.apply({"writer.temperature": 0.0})
    await team.run(task="go")
    assert [c["extra_create_args"] for c in shared.create_calls] == [{"temperature": 0.0}, {}]


def test_applying_unchanged_values_keeps_the_original_tool():
    agent = OptoAgent(calculator(replay("x")))
    original = agent.agent._tools[0]
    values = {p.name: p.value for p in agent.parameters()}
    written = agent.apply(values)  # what the loop does at the end with the best values
    assert agent.agent._tools[0] is original  # unchanged code and description: the tool object is kept
    assert written == values  # the core's contract: what was written, validated
    agent.apply({"calc.tools.add.description": "Sums two integers."})
    assert agent.agent._tools[0] is not original and agent.agent._tools[0]._func is original._func
