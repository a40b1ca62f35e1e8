"""An AgentChat team whose system message your code filled from a template: the template is the agent's system
parameter, credited through the conversation builder's template match; a write reaches the next request.

Real ``AssistantAgent``s in a ``RoundRobinGroupChat``, AutoGen's ``OpenAIChatCompletionClient`` talking HTTP to
a scripted OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_helpers import MODEL_INFO

from opto_adapters.autogen import TeamTarget
from opto_core import Parameter, coverage
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.testing.scripted_server import ScriptedServer, system_text

SUPPORT_TEMPLATE = "You are the support agent of {company}. Answer in one sentence."
REVIEW = "You check the support agent's answer. Reply APPROVED or a fix."


@pytest.fixture
def server():
    with ScriptedServer(repeat_last=True) as scripted:
        scripted.script(lambda request: "APPROVED" if system_text(request) == REVIEW else "We ship in two days.")
        yield scripted


def client(server):
    return OpenAIChatCompletionClient(
        model="scripted", base_url=server.base_url, api_key="scripted", model_info=MODEL_INFO
    )


def team(server, company="ACME"):
    support = AssistantAgent("support", client(server), system_message=SUPPORT_TEMPLATE.format(company=company))
    reviewer = AssistantAgent("reviewer", client(server), system_message=REVIEW)
    return RoundRobinGroupChat([support, reviewer], max_turns=2)


def support_requests(server):
    return [r for r in server.requests if system_text(r) != REVIEW]


def test_a_template_filled_at_build_time_is_the_system_parameter(server):
    target = TeamTarget(team(server), output="support", system_templates={"support": SUPPORT_TEMPLATE})
    parameter = target.bound["support.system_template"]
    assert parameter.value == SUPPORT_TEMPLATE and parameter.template_model is not None
    assert "support.system_message" not in target.bound.names()
    _, graph = target.run({"task": "When do you ship?"})
    call = graph["support.llm#0"]
    edge = next(e for e in call.edges if e.id == "param:support.system_template")
    assert (edge.arg, edge.match) == ("system_message", "template")
    assert "support.system_template" in backward(graph, Feedback(0.0, "give a date")).parameter_names
    target.apply({"support.system_template": "Support for {company}: always give a date."})
    _, graph = target.run({"task": "When do you ship?"})
    assert system_text(support_requests(server)[-1]) == "Support for ACME: always give a date."
    assert "support.system_template" in backward(graph, Feedback(0.0, "no")).parameter_names  # still credited
    with pytest.raises(ValueError, match=r"\{company\}"):
        target.apply({"support.system_template": "Support: always give a date."})
    report = coverage(target, [{"task": "When?"}])
    assert report["support.system_template"].reached


def test_your_template_parameter_filled_per_run(server):
    mine = Parameter("support.persona", "text", SUPPORT_TEMPLATE, template=True)
    target = TeamTarget(
        team(server),
        output="support",
        system_templates={"support": mine},
        template_values=lambda example: {"support": {"company": example["company"]}},
    )
    assert target.bound["support.persona"] is mine
    target.run({"task": "When do you ship?", "company": "Initech"})
    assert system_text(support_requests(server)[-1]) == "You are the support agent of Initech. Answer in one sentence."
    target.apply({"support.persona": "Support for {company}; be brief."})
    _, graph = target.run({"task": "When do you ship?", "company": "Globex"})
    assert system_text(support_requests(server)[-1]) == "Support for Globex; be brief."
    assert graph["support.llm#0"].meta["write_back_verified"] == ["support.persona"]
    assert "support.persona" in backward(graph, Feedback(0.0, "no")).parameter_names


def test_a_template_that_does_not_produce_the_message_is_refused(server):
    with pytest.raises(ValueError, match="is not an output of the system_template"):
        TeamTarget(team(server), system_templates={"support": "You are a pirate of {ship}."})
    with pytest.raises(ValueError, match="names no wrapped agent"):
        TeamTarget(team(server), system_templates={"writer": SUPPORT_TEMPLATE})


def test_deploying_a_system_template_into_a_freshly_built_team(server, tmp_path):
    from opto_adapters.autogen import apply_values
    from opto_core.kernel.binding import UnknownParameters

    target = TeamTarget(team(server), output="support", system_templates={"support": SUPPORT_TEMPLATE})
    target.apply({"support.system_template": "Support for {company}: always give a date."})
    target.save_values(tmp_path / "values.json")
    fresh = team(server, company="Initech")  # production builds it for another company
    with pytest.raises(UnknownParameters, match=r"system_templates=\{'support': <the template>\}"):
        apply_values(fresh, tmp_path / "values.json")
    with pytest.raises(ValueError, match="build the team again"):  # that call wrapped it without the template
        apply_values(fresh, tmp_path / "values.json", system_templates={"support": SUPPORT_TEMPLATE})
    fresh = team(server, company="Initech")
    applied = apply_values(fresh, tmp_path / "values.json", system_templates={"support": SUPPORT_TEMPLATE})
    assert applied["support.system_template"] == "Support for {company}: always give a date."
    import asyncio

    asyncio.run(fresh.run(task="When do you ship?"))
    assert system_text(support_requests(server)[-1]) == "Support for Initech: always give a date."  # its own values
