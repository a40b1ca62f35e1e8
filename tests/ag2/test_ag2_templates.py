"""A system message your run function fills from a template: the template is the parameter, and a write reaches
the next request (real AG2 agents, a scripted OpenAI-compatible server on 127.0.0.1)."""

from __future__ import annotations

import pytest
from autogen import ConversableAgent

from opto_adapters.autogen.ag2 import AG2Target
from opto_core import coverage
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.testing.scripted_server import system_text

CHAT_MODULE = '''
SUPPORT_TEMPLATE = "You are the support agent of {company}. Answer in one sentence."

def make_chat(assistant, user):
    def chat(example):
        assistant.update_system_message(SUPPORT_TEMPLATE.format(company=example["company"]))
        return user.initiate_chat(assistant, message=example["question"], max_turns=1, silent=True).summary
    return chat
'''


@pytest.fixture
def chat_module(user_module):
    return user_module(CHAT_MODULE, "ag2_chat")


def pair(server):
    assistant = ConversableAgent(
        "assistant", system_message="(set per run)", llm_config=server.llm_config(), human_input_mode="NEVER"
    )
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    return assistant, user


def test_a_template_the_run_function_formats_is_the_agents_system_parameter(server, chat_module):
    server.script("We ship in two days.", "Shipping takes two days.")
    assistant, user = pair(server)
    target = AG2Target(chat_module.make_chat(assistant, user), [assistant, user])
    names = target.bound.names()
    assert "chat.SUPPORT_TEMPLATE" in names and "assistant.system_message" not in names
    assert any("SUPPORT_TEMPLATE" in note for note in target.notes)
    parameter = target.bound["chat.SUPPORT_TEMPLATE"]
    assert parameter.value == chat_module.SUPPORT_TEMPLATE
    _, graph = target.run({"company": "ACME", "question": "When do you ship?"})
    assert system_text(server.requests[-1]) == "You are the support agent of ACME. Answer in one sentence."
    call = graph["assistant.llm#0"]
    edge = next(e for e in call.edges if e.id == "param:chat.SUPPORT_TEMPLATE")
    assert (edge.arg, edge.via, edge.match) == ("system_message", "data", "template")
    assert "chat.SUPPORT_TEMPLATE" in backward(graph, Feedback(0.0, "give a date")).parameter_names
    target.apply({"chat.SUPPORT_TEMPLATE": "Support for {company}: be warm and brief."})
    _, graph = target.run({"company": "Initech", "question": "When do you ship?"})
    assert system_text(server.requests[-1]) == "Support for Initech: be warm and brief."
    assert chat_module.SUPPORT_TEMPLATE == "Support for {company}: be warm and brief."
    assert graph["assistant.llm#0"].meta["write_back_verified"] == ["chat.SUPPORT_TEMPLATE"]
    assert "chat.SUPPORT_TEMPLATE" in backward(graph, Feedback(0.0, "warmer")).parameter_names  # still credited
    with pytest.raises(ValueError, match=r"\{company\}"):
        target.apply({"chat.SUPPORT_TEMPLATE": "Support: be brief."})  # the run function fills {company}
    server.script("Two days.")
    report = coverage(target, [{"company": "ACME", "question": "When?"}])
    assert report["chat.SUPPORT_TEMPLATE"].reached


def test_deploying_a_run_functions_template_and_your_own_parameters(server, chat_module, tmp_path):
    from opto_adapters.autogen.ag2 import apply_values
    from opto_core import Parameter
    from opto_core.kernel.binding import UnknownParameters

    assistant, user = pair(server)
    target = AG2Target(chat_module.make_chat(assistant, user), [assistant, user])
    target.apply({"chat.SUPPORT_TEMPLATE": "Support for {company}: be warm."})
    target.save_values(tmp_path / "values.json")
    chat_module.SUPPORT_TEMPLATE = "You are the support agent of {company}. Answer in one sentence."
    assistant, user = pair(server)
    chat = chat_module.make_chat(assistant, user)
    with pytest.raises(UnknownParameters, match=r"run=<that function>"):
        apply_values([assistant, user], tmp_path / "values.json")  # without run=, the template is unknown
    assert apply_values([assistant, user], tmp_path / "values.json", run=chat) == {
        "chat.SUPPORT_TEMPLATE": "Support for {company}: be warm."
    }
    server.script("Two days.")
    chat({"company": "ACME", "question": "When?"})
    assert system_text(server.requests[-1]) == "Support for ACME: be warm."
    mine = Parameter("assistant.greeting", "text", "Hello.")
    written = apply_values([assistant, user], {"assistant.greeting": "Hi!"}, parameters=[mine])
    assert written == {"assistant.greeting": "Hi!"} and mine.value == "Hi!"
