"""Building blocks of the AG2 tests: real agents, a buggy tool, a scripted group chat."""

from __future__ import annotations

from typing import Any

from autogen import ConversableAgent, GroupChat, GroupChatManager, register_function

from opto_core.testing.scripted_server import system_text


def buggy_add(a: int, b: int) -> int:
    """Add two integers."""
    return a - b


FIXED_ADD = 'def buggy_add(a: int, b: int) -> int:\n    """Add two integers."""\n    return a + b\n'


def terminates(message: dict[str, Any]) -> bool:
    return "TERMINATE" in (message.get("content") or "")


def calculator_pair(server: Any, **settings: Any) -> tuple[ConversableAgent, ConversableAgent]:
    """An assistant that calls ``buggy_add`` and a user proxy that runs it (no llm_config)."""
    assistant = ConversableAgent(
        "assistant",
        system_message="You add numbers with your tool.",
        llm_config=server.llm_config(temperature=0.3, **settings),
        human_input_mode="NEVER",
    )
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", is_termination_msg=terminates)
    register_function(buggy_add, caller=assistant, executor=user, name="buggy_add", description="Adds a and b.")
    return assistant, user


def chat_of(assistant: ConversableAgent, user: ConversableAgent):
    def chat(example: Any) -> str:
        return user.initiate_chat(assistant, message=example["question"], max_turns=3, silent=True).summary

    return chat


SELECTION_HEADER = "You are in a role play game"
ORDER = ("writer", "critic", "editor")


def group_reply(request: dict[str, Any]) -> str:
    """The scripted model of the group chat: picks writer -> critic -> editor, and answers as each."""
    system = system_text(request)
    if system.startswith(SELECTION_HEADER) or "role play" in system:
        spoken = [m.get("name") for m in request["messages"] if m.get("name") in ORDER]
        return ORDER[len(spoken)] if len(spoken) < len(ORDER) else "editor"
    if "writer" in system:
        return "Draft: cats purr."
    if "critic" in system:
        return "Critique: say why."
    return "Final: cats purr when content. TERMINATE"


def group_chat(
    server: Any, method: str = "auto"
) -> tuple[GroupChatManager, ConversableAgent, dict[str, ConversableAgent]]:
    config = server.llm_config(temperature=0.2)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", description="The user.")
    agents = {
        name: ConversableAgent(
            name,
            system_message=f"You are the {name}.",
            llm_config=config,
            description=f"The {name}.",
            human_input_mode="NEVER",
        )
        for name in ORDER
    }
    chat = GroupChat(
        [user, *agents.values()], messages=[], max_round=4, speaker_selection_method=method, allow_repeat_speaker=False
    )
    manager = GroupChatManager(chat, llm_config=server.llm_config(temperature=0.0), is_termination_msg=terminates)
    return manager, user, agents
