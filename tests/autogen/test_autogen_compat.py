"""Every private AgentChat attribute the adapter uses (`opto_adapters.autogen._compat`), checked against
the installed AgentChat: each test fails when a release moves or changes one of them. Also the public
seams that replaced earlier private accesses (saved configs, the pickling protocol, the relayed loop)."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import AgentId, SingleThreadedAgentRuntime
from autogen_core.models import SystemMessage
from autogen_core.tools import FunctionTool, StaticWorkbench, ToolOverride
from autogen_helpers import add, calculator, plain, replay, request_system, tool_call
from packaging.specifiers import SpecifierSet

from opto_adapters.autogen import _compat
from opto_adapters.autogen.bindings import _global_imports
from opto_adapters.autogen.parameters import _overridden_tools
from opto_adapters.autogen.tracing import client_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_agentchat_is_in_the_tested_range_and_the_extra_pins_it():
    for dist in ("autogen-agentchat", "autogen-core", "autogen-ext"):
        assert version(dist) in SpecifierSet(_compat.TESTED_RANGE), f"{dist} {version(dist)}: re-check _compat.py"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"autogen-agentchat{_compat.TESTED_RANGE}"' in pyproject  # the extra pins what was tested


async def test_the_model_client_an_agent_calls_is_the_one_set():
    first, second = replay("from first"), replay("from second")
    agent = plain("bot", first)
    assert _compat.model_client(agent) is first
    _compat.set_model_client(agent, second)
    result = await agent.run(task="hi")
    assert result.messages[-1].content == "from second" and not first.create_calls


async def test_the_system_messages_an_agent_sends_are_the_ones_set():
    client = replay("a", "b")
    agent = plain("bot", client, "Original.")
    assert [m.content for m in _compat.system_messages(agent)] == ["Original."]
    _compat.set_system_messages(agent, [SystemMessage(content="Changed.")])
    await agent.run(task="x")
    assert request_system(client.create_calls[-1]) == "Changed."


async def test_a_tool_replaced_in_the_workbench_list_is_the_one_offered_and_run():
    client = replay(tool_call("add", a=2, b=3), "done")
    agent = calculator(client, reflect=True)
    (tools,) = _compat.tool_lists(agent)
    assert [t.name for t in tools] == ["add"] and _compat.tool_function(tools[0]) is add

    def add_ten(a: int, b: int) -> int:
        """Add two integers."""
        return a + b + 10

    tools[0] = FunctionTool(add_ten, description="Adds, plus ten.", name="add")
    result = await agent.run(task="2+3?")
    offered = client.create_calls[0]["tools"]
    assert [t["description"] for t in offered] == ["Adds, plus ten."]
    assert any("15" in str(m.content) for m in result.messages)  # the replaced function ran


def test_tool_lists_include_a_static_workbench_the_user_passed():
    tool = FunctionTool(add, description="Add.")
    agent = AssistantAgent("calc", replay("x"), workbench=StaticWorkbench([tool]))
    assert _compat.tool_lists(agent) == [[tool]]


async def test_team_participants_and_registration_and_registering_again():
    writer, critic = plain("writer", replay("w1", "w2")), plain("critic", replay("c1", "c2"))
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))
    assert _compat.participants(team) == [writer, critic]
    assert _compat.registration(team) == (False, True)
    await team.run(task="one")
    assert _compat.registration(team) == (True, True)
    replacement = plain("writer", replay("r1"))
    _compat.participants(team)[0] = replacement

    async def registered_writer():
        from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer  # noqa: F401

        topic = team._participant_topic_types[0]  # test-only reads, to see what the runtime holds
        container = await team._runtime.try_get_underlying_agent_instance(AgentId(topic, team._team_id))
        return container._agent

    assert await registered_writer() is writer  # the list entry alone changes nothing
    state = await team.save_state()
    _compat.register_again(team)
    assert _compat.registration(team) == (False, True)
    await team.load_state(state)  # registers the current participants on the fresh runtime
    assert _compat.registration(team) == (True, True) and await registered_writer() is replacement
    result = await team.run(task="two")
    assert "r1" in [m.content for m in result.messages]


def test_registering_again_gives_a_queue_a_new_event_loop_can_use():
    team = RoundRobinGroupChat([plain("a", replay("1", "2", "3"))], termination_condition=MaxMessageTermination(2))
    asyncio.run(team.run(task="first loop"))  # may bind the queue to this loop (plain AgentChat then fails
    old_queue = team._output_message_queue  # on the next loop: test_plain_agentchat_still_fails_on_a_second...)

    async def again():
        state = await team.save_state()
        _compat.register_again(team)
        await team.load_state(state)
        return await team.run(task="third loop")

    assert asyncio.run(again()).messages[-1].content == "2"
    assert team._output_message_queue is not old_queue  # test-only read: a fresh queue, bound to no loop


def test_a_team_on_a_runtime_the_user_passed_says_so():
    runtime = SingleThreadedAgentRuntime()
    team = RoundRobinGroupChat(
        [plain("a", replay("1"))], termination_condition=MaxMessageTermination(2), runtime=runtime
    )
    assert _compat.registration(team) == (False, False)


async def test_the_selector_client_is_the_one_that_chooses():
    chooser = replay("critic")
    team = SelectorGroupChat(
        [plain("writer", replay("w")), plain("critic", replay("c"))],
        model_client=replay("x"),
        termination_condition=MaxMessageTermination(2),
    )
    _compat.set_selector_client(team, chooser)
    assert _compat.selector_client(team) is chooser
    result = await team.run(task="go")
    assert chooser.create_calls and result.messages[-1].source == "critic"


# ----- the public seams that replaced private reads ------------------------------------------------
def test_a_clients_settings_come_from_its_saved_config():
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    client = OpenAIChatCompletionClient(
        model="local",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-not-a-secret",
        temperature=0.3,
        max_tokens=50,
        model_info=dict(
            function_calling=True, vision=False, json_output=False, family="unknown", structured_output=False
        ),
    )
    config = client_config(client)
    assert config["temperature"] == 0.3 and config["max_tokens"] == 50 and config["model"] == "local"
    assert "api_key" not in config and "base_url" not in config
    assert client_config(object()) == {}  # not a component: nothing known


def test_a_tool_override_is_read_from_the_workbench_config():
    tool = FunctionTool(add, description="Add.")
    workbench = StaticWorkbench([tool], tool_overrides={"add": ToolOverride(description="Adds two numbers.")})
    assert _overridden_tools(AssistantAgent("calc", replay("x"), workbench=workbench)) == {"add"}
    assert _overridden_tools(calculator(replay("x"))) == set()


def test_a_rebuilt_tool_keeps_its_global_imports():
    from autogen_core.code_executor import ImportFromModule

    tool = FunctionTool(add, description="Add.", global_imports=[ImportFromModule("math", ("sqrt",)), "os"])
    imports = _global_imports(tool)
    assert imports[1] == "os" and imports[0].module == "math" and tuple(imports[0].imports) == ("sqrt",)
