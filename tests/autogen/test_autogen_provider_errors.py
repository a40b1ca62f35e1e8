"""The issue's case: an AgentChat SelectorGroupChat whose check runs all get HTTP 500 is never kept.

The team is AutoGen's own (`SelectorGroupChat`, `AssistantAgent`, `OpenAIChatCompletionClient`);
only the model is fake: a scripted OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import SelectorGroupChat

from opto_adapters.autogen import wrap_team
from opto_core.engine.loop import optimize
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM, ScriptedServer, http_error, system_text

MODEL_INFO = {
    "function_calling": False,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}
BROKEN = "You write one short sentence, with flair."


def _reply(body):
    system = system_text(body)
    if system == BROKEN:
        return http_error(500, "the model server crashed")
    if "select" in system.lower() or "roles are available" in json.dumps(body).lower():
        return "writer"
    return "The sea is blue."


def test_a_selector_group_chat_whose_check_runs_all_got_500_is_never_kept():
    pytest.importorskip("autogen_ext.models.openai")
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    with ScriptedServer([_reply], repeat_last=True) as server:
        client = OpenAIChatCompletionClient(
            model="scripted", base_url=server.base_url, api_key="scripted", model_info=MODEL_INFO, max_retries=0
        )
        writer = AssistantAgent(
            "writer", client, system_message="You write one short sentence.", description="Writes a sentence."
        )
        critic = AssistantAgent(
            "critic", client, system_message="You judge the sentence.", description="Judges the sentence."
        )
        team = SelectorGroupChat([writer, critic], model_client=client, termination_condition=MaxMessageTermination(2))
        target = wrap_team(team, output="writer", temperature=False)
        llm = ScriptedLLM([json.dumps({"reasoning": "add flair", "suggestion": {"writer.system_message": BROKEN}})])
        tasks = [{"task": "Describe the sea."}, {"task": "Describe the sky."}]
        result = optimize(
            target,
            tasks,
            lambda example, output: (1.0 if "blue" in str(output) else 0.0, "blue?"),
            OptoPrime(target.parameters(), llm),
            max_steps=2,
            batch_size=2,
            provider_retry_seconds=0.5,
        )
    step = result.history[1]
    assert not step["kept"], step["decision"]
    assert step["decision"].startswith("rolled back: provider error: 2 of 2 runs got HTTP 500")
    assert result.best_values["writer.system_message"] == "You write one short sentence."
    assert {p.name: p.value for p in target.parameters()}["writer.system_message"] == "You write one short sentence."
    assert result.stopped_reason == "provider_error"
