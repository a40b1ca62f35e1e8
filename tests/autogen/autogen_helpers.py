"""Building blocks for the AutoGen adapter tests (imported by the test modules)."""

from __future__ import annotations

import json
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

#: Scripted tool calls need a client that says it can call functions (the replay default is False).
MODEL_INFO = {"function_calling": True, "vision": False, "json_output": False, "family": "unknown",
              "structured_output": False}


def tool_call(name: str, call_id: str = "call_1", **arguments: Any) -> CreateResult:
    return CreateResult(finish_reason="function_calls",
                        content=[FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))],
                        usage=RequestUsage(prompt_tokens=10, completion_tokens=5), cached=False)


def replay(*responses: Any) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(responses), model_info=MODEL_INFO)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def buggy_add(a: int, b: int) -> int:
    """Add two integers."""
    return a - b


def calculator(client: ReplayChatCompletionClient, *, reflect: bool = True, name: str = "calc",
               system_message: str = "You add numbers with your tool.") -> AssistantAgent:
    return AssistantAgent(name, client, tools=[add], reflect_on_tool_use=reflect, system_message=system_message,
                          description="Adds numbers.")


def plain(name: str, client: ReplayChatCompletionClient, system_message: str | None = None) -> AssistantAgent:
    return AssistantAgent(name, client, system_message=system_message or f"You are {name}.",
                          description=f"The {name}.")


def request_system(call: dict[str, Any]) -> str | None:
    """The system message text of one recorded replay request."""
    first = call["messages"][0]
    return first.content if type(first).__name__ == "SystemMessage" else None


def request_texts(call: dict[str, Any]) -> list[str]:
    return [m.content if isinstance(m.content, str) else repr(m.content) for m in call["messages"]]
