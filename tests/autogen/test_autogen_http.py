"""AutoGen's real ``OpenAIChatCompletionClient`` through OptoAgent, on recorded HTTP traffic.

Recorded against the embedded llama.cpp server (SmolLM2-135M; far too small to judge answers: the
test asserts what the adapter does with genuine traffic, never the model's quality) and replayed
offline. Re-record with ``scripts/record_cassettes.sh tests/autogen/test_autogen_http.py``.

What only real HTTP shows: the temperature an optimizer writes (per agent, through
``extra_create_args``) and the new system message are in the JSON body the client sent, and the
graph's LLM-call nodes hold what the server answered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat

from opto_adapters.autogen import wrap_team

KEY = "sk-cassette-SECRET-0123456789"
MODEL = "SmolLM2-135M-Instruct"
RECORDING = os.environ.get("OPTO_RECORD") == "1"
CASSETTES = Path(__file__).parent.parent / "cassettes"
#: An unknown model name needs its capabilities spelled out for autogen-ext.
MODEL_INFO = {
    "function_calling": False,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def _team(base_url: str) -> RoundRobinGroupChat:
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    # one client shared by both agents (the usual setup): temperature must still be per agent
    client = OpenAIChatCompletionClient(
        model=MODEL,
        base_url=base_url,
        api_key=KEY,
        model_info=MODEL_INFO,
        max_tokens=24,
        temperature=0.7,
        max_retries=0,
    )
    writer = AssistantAgent("writer", client, system_message="You write one short sentence.")
    critic = AssistantAgent("critic", client, system_message="You judge the sentence in a few words.")
    return RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))


async def test_write_back_is_on_the_wire_with_the_openai_client(cassette, record_base_url):
    pytest.importorskip("autogen_ext.models.openai")
    team = _team(record_base_url)
    target = wrap_team(team)
    assert {p.name: p.value for p in target.parameters()}["writer.temperature"] == 0.7  # read from the client
    with cassette("autogen_openai_team") as cass:
        before = len(cass)
        await team.run(task="Describe the sea.")
        target.apply(
            {"writer.system_message": "You write one short sentence about colours.", "writer.temperature": 0.1}
        )
        await team.reset()
        result = await team.run(task="Describe the sea.")
    if RECORDING:
        assert len(cass) - before == 4, "vcrpy did not see the requests: is the HTTP library patched?"
    else:
        assert cass.play_count == 4 and cass.all_played
    text = (CASSETTES / "autogen_openai_team.yaml").read_text()
    assert KEY not in text and "SECRET" not in text and "authorization" not in text.lower()

    bodies = [json.loads(request.body) for request in cass.requests[-4:]]
    first_writer, first_critic, second_writer, second_critic = bodies
    assert first_writer["messages"][0] == {"role": "system", "content": "You write one short sentence."}
    assert first_writer["temperature"] == 0.7 and first_critic["temperature"] == 0.7
    assert second_writer["messages"][0]["content"] == "You write one short sentence about colours."
    assert second_writer["temperature"] == 0.1  # the write-back, on the wire
    assert second_critic["temperature"] == 0.7  # the shared client's other agent is untouched
    assert all(body["model"] == MODEL and body["max_tokens"] == 24 for body in bodies)

    graph = target.last_graph
    assert graph.meta["write_back_verified"] == ["writer.system_message", "writer.temperature"]
    [writer_call], [critic_call] = graph.by_name("writer.llm"), graph.by_name("critic.llm")
    answered = [m for m in result.messages if m.source == "writer"][0].content
    assert writer_call.value == answered and writer_call.meta["model"] == MODEL
    assert writer_call.meta["settings"]["temperature"] == 0.1 and critic_call.meta["settings"]["temperature"] == 0.7
    assert writer_call.meta["usage"]["prompt_tokens"] > 0  # token usage from the server's reply
    # the critic's request carried the writer's answer, and the graph links it as context
    assert second_critic["messages"][-1]["content"] == answered
    assert (graph.by_name("writer.message")[0].id, "context") in {(e.id, e.via) for e in critic_call.edges}
