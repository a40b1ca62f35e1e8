"""The private AG2 attributes the adapter reads (`opto_adapters.autogen.ag2._compat`), checked against the
installed AG2: each test fails when a release moves or changes one of them."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from ag2_helpers import buggy_add
from autogen import ConversableAgent, GroupChat, GroupChatManager
from packaging.specifiers import SpecifierSet

from opto_adapters.autogen.ag2 import _compat
from opto_adapters.autogen.ag2.bindings import manager_groupchat_copies, registered_function

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_ag2_is_in_the_tested_range_and_the_extra_pins_it():
    assert version("autogen") in SpecifierSet(_compat.TESTED_RANGE), f"autogen {version('autogen')}: re-check _compat"
    assert f'"autogen[openai]{_compat.TESTED_RANGE}"' in (ROOT / "pyproject.toml").read_text()


def test_a_manager_runs_with_shallow_copies_of_its_groupchat():
    chat = GroupChat([ConversableAgent("a", llm_config=False), ConversableAgent("b", llm_config=False)], messages=[])
    manager = GroupChatManager(chat, llm_config=False)
    entries = [e for e in _compat.reply_configs(manager) if e.get("init_config") is chat]
    assert entries and all(isinstance(e["config"], GroupChat) and e["config"] is not chat for e in entries)
    copies = manager_groupchat_copies(manager, chat)
    chat.select_speaker_message_template = "changed on the original only"
    assert all(c.select_speaker_message_template != "changed on the original only" for c in copies)


def test_a_registered_tool_keeps_the_users_function():
    executor = ConversableAgent("x", llm_config=False)
    executor.register_for_execution(name="buggy_add")(buggy_add)
    registered = executor.function_map["buggy_add"]
    assert registered is not buggy_add and _compat.registered_origin(registered) is not registered
    assert registered_function(executor, "buggy_add") is buggy_add
    assert _compat.registered_origin(buggy_add) is buggy_add  # registered as is: no wrapper
