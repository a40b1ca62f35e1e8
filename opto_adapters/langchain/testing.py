"""Fake chat models for tests, examples and the demo: only the model is fake, LangChain is real.

- `EchoChatModel`: a chat model with real ``model_name``/``temperature``/``top_p``/``max_tokens``
  fields that records, for every call, the messages and the settings it actually had, and replies
  with ``reply(messages, call)`` (default: echoes the last human message). Writing a parameter
  back can then be checked in what the model received, not in the object's attributes.
- `ToolCallingFakeModel`: LangChain's `FakeMessagesListChatModel` with ``bind_tools``: it returns
  scripted messages (with ``tool_calls``) in order and records the tool schemas it was given.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from opto_adapters.langchain.tracing.snapshots import message_dict

Reply = Callable[[list[BaseMessage], dict[str, Any]], "str | AIMessage"]


def _tool_schemas(tools: Any) -> list[dict[str, Any]]:
    return [dict(t) if isinstance(t, dict) else convert_to_openai_tool(t) for t in tools or []]


class EchoChatModel(BaseChatModel):
    """A deterministic chat model whose settings are real fields, recording what each call received."""

    model_name: str = "echo-1"
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 256
    reply: Reply | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "echo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        call = {
            "messages": [message_dict(m) for m in messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "tools": _tool_schemas(kwargs.get("tools")),
        }
        with self._lock:
            self.calls.append(call)
        if self.reply is not None:
            answer = self.reply(messages, call)
        else:
            humans = [m for m in messages if m.type == "human"]
            answer = f"echo: {humans[-1].content if humans else ''}"
        message = answer if isinstance(answer, AIMessage) else AIMessage(content=str(answer))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=_tool_schemas(tools), **kwargs)


class ToolCallingFakeModel(FakeMessagesListChatModel):
    """`FakeMessagesListChatModel` that supports ``bind_tools`` and records each call's input."""

    temperature: float = 0.0
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls.append(
            {
                "messages": [message_dict(m) for m in messages],
                "temperature": self.temperature,
                "tools": _tool_schemas(kwargs.get("tools")),
            }
        )
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        # a fresh copy per call: the scripted message objects must not collect run ids across runs
        message = result.generations[0].message.model_copy(deep=True)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=_tool_schemas(tools), **kwargs)
