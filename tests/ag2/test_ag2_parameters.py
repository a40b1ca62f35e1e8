"""AG2 parameters through the shared write-back model: each write reaches the next request, restore undoes all."""

from __future__ import annotations

import copy

import pytest
from ag2_helpers import FIXED_ADD, calculator_pair, chat_of, group_chat, group_reply

from opto_adapters.autogen.ag2 import AG2Target, apply_values, parameters_of
from opto_adapters.autogen.ag2 import bindings as ag2_bindings
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.parameters import InvalidValue
from opto_core.testing.scripted_server import system_text, tool_call


def tool_schema(request, name="buggy_add"):
    return next(t["function"] for t in request["tools"] if t["function"]["name"] == name)


def test_names_kinds_and_no_model_parameters_for_an_executor(server):
    assistant, user = calculator_pair(server, max_tokens=50)
    params = {p.name: p for p in parameters_of([assistant, user])}
    assert {n: (p.kind, p.lower, p.upper) for n, p in params.items()} == {
        "assistant.system_message": ("text", None, None),
        "assistant.temperature": ("float", 0.0, 2.0),
        "assistant.max_tokens": ("int", 50, 1024),
        "assistant.tools.buggy_add.description": ("text", None, None),
        "user.tools.buggy_add.code": ("code", None, None),
    }
    assert params["user.tools.buggy_add.code"].value.startswith("def buggy_add(a: int, b: int) -> int:")
    target = AG2Target(chat_of(assistant, user), [assistant, user], exclude=["*.description"])
    assert not target.bound["assistant.tools.buggy_add.description"].trainable
    assert target.notes == ["user has no llm_config: no model parameters (system message, settings, tool descriptions)"]
    with pytest.raises(UnknownParameters, match="assistant.system_message"):
        AG2Target(chat_of(assistant, user), [assistant, user], include=["nope.*"])


def test_every_write_reaches_the_next_request_and_restore_undoes_them(server):
    script = [tool_call("buggy_add", a=2, b=3), "done TERMINATE"]
    server.script(*script * 3)
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    _, before = target.run({"question": "2+3?"})
    assert before.by_name("user.tool.buggy_add")[0].value == "-1"
    original_tools = copy.deepcopy(server.requests[0]["tools"])
    snapshot = target.snapshot()
    target.apply(
        {
            "assistant.system_message": "Be exact.",
            "assistant.temperature": 0.9,
            "assistant.tools.buggy_add.description": "Returns a + b.",
            "user.tools.buggy_add.code": FIXED_ADD,
        }
    )
    _, after = target.run({"question": "2+3?"})
    request = server.requests[2]
    assert system_text(request) == "Be exact." and request["temperature"] == 0.9
    assert tool_schema(request)["description"] == "Returns a + b."
    assert request["tools"][0]["function"]["parameters"] == original_tools[0]["function"]["parameters"]
    assert after.by_name("user.tool.buggy_add")[0].value == "5"  # the new code really ran
    assert after["param:user.tools.buggy_add.code"].value == FIXED_ADD
    assert after.meta["write_back_verified"] == [
        "assistant.system_message",
        "assistant.temperature",
        "assistant.tools.buggy_add.description",
    ]
    target.restore(snapshot)
    _, restored = target.run({"question": "2+3?"})
    assert server.requests[4] == server.requests[0]  # the very same request as before any write
    assert restored.by_name("user.tool.buggy_add")[0].value == "-1"
    assert target.values() == dict(snapshot_values(snapshot))


def snapshot_values(snapshot):
    return {name: value for name, (_, value) in snapshot.items()}


def test_temperature_is_written_on_every_config_list_entry(server):
    assistant, user = calculator_pair(server)
    assistant.llm_config.config_list.append(copy.deepcopy(assistant.llm_config.config_list[0]))
    ag2_bindings.rebuild_client(assistant)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    target.apply({"assistant.temperature": 1.5})
    assert [e.temperature for e in assistant.llm_config.config_list] == [1.5, 1.5]
    assert assistant.llm_config.temperature == 1.5


def test_code_that_changes_the_advertised_signature_is_rejected_before_it_is_applied(server):
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    registered = user.function_map["buggy_add"]
    changed = 'def buggy_add(a: int, b: int, c: int = 0) -> int:\n    return a + b + c\n'
    side_effect = 'import os\nos.environ["OPTO_AG2_RAN"] = "1"\ndef buggy_add(a: str, b: int) -> int:\n    return 0\n'
    for code, reason in ((changed, "signature must stay"), (side_effect, "only imports, a docstring")):
        with pytest.raises(InvalidValue, match=reason):
            target.apply({"user.tools.buggy_add.code": code, "assistant.system_message": "Changed."})
    assert (
        user.function_map["buggy_add"] is registered and assistant.system_message == "You add numbers with your tool."
    )
    import os

    assert "OPTO_AG2_RAN" not in os.environ  # nothing of the rejected code ran


def test_selection_templates_reach_the_selector_and_keep_their_placeholders(server):
    server.replies = [group_reply] * 12
    manager, user, agents = group_chat(server)
    target = AG2Target(lambda task: user.initiate_chat(manager, message=task, silent=True).summary, [manager])
    with pytest.raises(InvalidValue, match="keep the placeholders"):
        target.apply({"chat_manager.select_speaker_message_template": "Pick one of {agentlist}."})
    with pytest.raises(InvalidValue, match="unknown placeholders"):
        target.apply({"chat_manager.select_speaker_message_template": "{roles} {agentlist} {oops}"})
    snapshot = target.snapshot()
    target.apply(
        {
            "chat_manager.select_speaker_message_template": "In this role play: {roles}. Pick from {agentlist}.",
            "chat_manager.temperature": 0.4,
            "writer.system_message": "You are the writer. Be brief.",
        }
    )
    _, graph = target.run("Write about cats.")
    selection = server.requests[0]
    assert (
        system_text(selection).startswith("In this role play: writer: The writer.") and selection["temperature"] == 0.4
    )
    assert system_text(server.requests[1]) == "You are the writer. Be brief."
    assert set(graph.meta["write_back_verified"]) == {
        "chat_manager.select_speaker_message_template",
        "chat_manager.temperature",
        "writer.system_message",
    }
    target.restore(snapshot)
    server.requests.clear()
    target.run("Write about cats.")
    assert system_text(server.requests[0]).startswith("You are in a role play game")
    assert server.requests[0]["temperature"] == 0.0


def test_apply_values_deploys_a_saved_file(server, tmp_path):
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    target.apply({"assistant.system_message": "Deployed.", "user.tools.buggy_add.code": FIXED_ADD})
    path = tmp_path / "ag2.values.json"
    target.save_values(str(path))
    fresh_assistant, fresh_user = calculator_pair(server)
    written = apply_values([fresh_assistant, fresh_user], str(path))
    assert written["assistant.system_message"] == "Deployed." and fresh_assistant.system_message == "Deployed."
    assert fresh_user.function_map["buggy_add"](a=2, b=3) == "5"
    with pytest.raises(UnknownParameters, match="assistant.system_message"):
        apply_values([fresh_assistant, fresh_user], {"assistant.sytem_message": "typo"})
