"""An OpenAI Agents SDK program (a tool and a handoff) optimized through the gateway, with no change to its code.

The SDK calls ``POST /v1/responses`` by default (``instructions`` hold the system prompt) and chat
completions when told so; both are tested. Its tracing is off (it would export to OpenAI).
"""

from __future__ import annotations

import pytest
from gateway_helpers import UPSTREAM_KEY, data_parents, one_step, reaches, system_of

from opto_core import GatewayTarget
from opto_core.testing import tool_call

TRIAGE = "You look up the weather for the city, then hand off to the poet."
POET = "You write a two-line poem from the weather report."


def weather_poem(example: dict) -> str:
    """The user's program, written for the SDK only: a triage agent with a tool, handing off to a poet."""
    from agents import Agent, Runner, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """The weather report for a city."""
        return f"Sunny and 21C in {city}"

    poet = Agent(name="Poet", instructions=POET, model="gpt-4o-mini")
    triage = Agent(name="Triage", instructions=TRIAGE, tools=[get_weather], handoffs=[poet], model="gpt-4o-mini")
    return Runner.run_sync(triage, f"A weather poem for {example['city']}").final_output


def scripted_agents(body: dict) -> object:
    """The fake model: triage calls the tool, then hands off; the poet rhymes (in short lines when told)."""
    system = system_of(body)
    items = body.get("input") if "input" in body else body["messages"]
    said = str(items)
    if "hand off" in system:
        if "get_weather" not in said:
            city = said.split("poem for ")[1].split("'")[0].split('"')[0]
            return tool_call("get_weather", call_id=f"call_w_{city}", city=city)
        return tool_call("transfer_to_poet", call_id="call_h")
    report = "Sunny and 21C" if "Sunny and 21C" in said else "no report"
    style = "short" if "short" in system else "long"
    return f"({style}) {report}: the sky is bright, the day is light."


def feedback(example: dict, output: str) -> tuple[float, str]:
    return (1.0, "good") if output.startswith("(short)") else (0.0, "the poem must be short")


@pytest.fixture(params=["responses", "chat_completions"])
def sdk_api(request, no_agents_tracing):
    agents = no_agents_tracing
    agents.set_default_openai_api(request.param)
    yield request.param
    agents.set_default_openai_api("responses")


def test_agents_sdk_program_is_optimized_through_the_gateway(upstream, sdk_api):
    upstream.script(scripted_agents)
    upstream.repeat_last = True
    trainset = [{"city": "Paris"}, {"city": "Lima"}]
    with GatewayTarget(
        run=weather_poem,
        upstream=upstream.base_url,
        api_key=UPSTREAM_KEY,
        discover_with=trainset,
        tools=["get_weather"],
    ) as target:
        expected_path = "/v1/responses" if sdk_api == "responses" else "/v1/chat/completions"
        assert set(upstream.paths) == {expected_path}
        values = {p.name: p.value for p in target.parameters()}
        assert values == {
            "agent_1.system": TRIAGE,
            "agent_2.system": POET,
            "tool.get_weather.description": "The weather report for a city.",
            "agent_1.user_1": "A weather poem for {city}",
        }  # a template of the example's field

        output, graph = target.run(trainset[0])
        assert output.startswith("(long) Sunny and 21C")
        calls = [n for n in graph.nodes if n.op_type == "llm_call"]
        assert [n.name for n in calls] == ["agent_1.llm", "agent_1.llm", "agent_2.llm"]
        tool, transfer = [n for n in graph.nodes if n.op_type == "tool"]
        assert tool.name == "agent_1.tool.get_weather" and tool.value == "Sunny and 21C in Paris"
        assert transfer.name == "agent_1.tool.transfer_to_poet" and "Poet" in transfer.value
        # data flow: the tool's result reaches the triage agent's second call, and the poet's call
        assert reaches(graph, tool.id, calls[1].id) and reaches(graph, tool.id, calls[2].id, ("data", "context"))
        (handoff,) = [n for n in graph.nodes if n.meta.get("type") == "handoff"]
        assert reaches(graph, calls[1].id, handoff.id) and reaches(graph, handoff.id, transfer.id)
        assert "param:tool.get_weather.description" in data_parents(graph, calls[0].id)
        assert "param:agent_2.system" in data_parents(graph, calls[2].id)

        result = one_step(target, trainset, feedback, {"agent_2.system": "You write a short two-line poem."})
        assert result.best_values["agent_2.system"] == "You write a short two-line poem."

        upstream.requests.clear()
        assert target.run({"city": "Oslo"})[0].startswith("(short) Sunny and 21C")
        systems = [system_of(body) for body in upstream.requests]
        assert systems == [TRIAGE, TRIAGE, "You write a short two-line poem."]
