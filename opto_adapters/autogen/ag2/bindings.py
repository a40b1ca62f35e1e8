"""Where each classic AutoGen (AG2) parameter lives, as `opto_core.kernel.binding.Binding`s."""

from __future__ import annotations

import copy
import inspect
import string
from dataclasses import dataclass, field
from typing import Any

from autogen import ConversableAgent, GroupChat, GroupChatManager, OpenAIWrapper

from opto_adapters.autogen.ag2 import _compat
from opto_core.kernel.binding import Binding
from opto_core.kernel.code import (
    compile_like,
    function_source,
)


@dataclass
class SystemMessageBinding(Binding):
    agent: ConversableAgent

    def read(self) -> str:
        return self.agent.system_message

    def write(self, value: str) -> None:
        self.agent.update_system_message(value)

    def verify(self, value: str) -> None:
        if self.agent.system_message != value:
            raise RuntimeError(f"{self.agent.name}.system_message still reads {self.agent.system_message!r}")

    def describe(self) -> str:
        return f"{self.agent.name}.update_system_message"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _set(obj: Any, key: str, value: Any) -> None:
    if isinstance(obj, dict):
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    else:
        setattr(obj, key, value)


def rebuild_client(agent: ConversableAgent) -> None:
    """Rebuild the agent's OpenAIWrapper from its llm_config (AG2 builds it once, in ``__init__``)."""
    agent.client = OpenAIWrapper(**agent.llm_config)


@dataclass
class SettingBinding(Binding):
    """One numeric setting, on the llm_config's top level and on every config_list entry."""

    agent: ConversableAgent
    key: str

    def _entries(self) -> list[Any]:
        return list(_get(self.agent.llm_config, "config_list") or [])

    def read(self) -> Any:
        for entry in self._entries():
            value = _get(entry, self.key)
            if value is not None:
                return value
        return _get(self.agent.llm_config, self.key)

    def write(self, value: Any) -> None:
        if any(_get(e, "model_client_cls") for e in self._entries()):
            raise RuntimeError(
                f"{self.agent.name} uses a custom model client; rebuilding its client would "
                "deactivate it, so its settings are not written"
            )
        _set(self.agent.llm_config, self.key, value)
        for entry in self._entries():
            _set(entry, self.key, value)

    def refresh(self) -> None:
        rebuild_client(self.agent)

    def verify(self, value: Any) -> None:
        if self.read() != value:
            raise RuntimeError(f"{self.describe()} still reads {self.read()!r}")

    def save(self) -> Any:
        return (_get(self.agent.llm_config, self.key), [_get(e, self.key) for e in self._entries()])

    def load(self, state: Any) -> None:
        top, entries = state
        _set(self.agent.llm_config, self.key, top)
        for entry, value in zip(self._entries(), entries):
            _set(entry, self.key, value)
        rebuild_client(self.agent)

    def describe(self) -> str:
        return f"{self.agent.name}.llm_config[{self.key!r}] (every config_list entry)"


@dataclass
class ToolDescriptionBinding(Binding):
    """A tool's description in the caller's advertised schema (``llm_config["tools"]``)."""

    caller: ConversableAgent
    name: str

    def _tools(self) -> list[dict[str, Any]]:
        return list(self.caller.llm_config.get("tools") or [])

    def _schema(self, tools: list[dict[str, Any]]) -> dict[str, Any]:
        for tool in tools:
            if tool.get("function", {}).get("name") == self.name:
                return tool
        raise KeyError(f"{self.caller.name} no longer advertises a tool named {self.name!r}")

    def read(self) -> str:
        return self._schema(self._tools())["function"].get("description", "")

    def write(self, value: str) -> None:
        tools = copy.deepcopy(self._tools())
        self._schema(tools)["function"]["description"] = value
        self.caller.llm_config["tools"] = tools  # what update_tool_signature does, keeping the order

    def refresh(self) -> None:
        rebuild_client(self.caller)

    def save(self) -> Any:
        return copy.deepcopy(self._tools())

    def load(self, state: Any) -> None:
        self.caller.llm_config["tools"] = copy.deepcopy(state)
        rebuild_client(self.caller)

    def describe(self) -> str:
        return f"{self.caller.name}.llm_config['tools'][{self.name!r}].description"


@dataclass
class ToolCodeBinding(Binding):
    """A tool's implementation, registered for execution on the executor."""

    executor: ConversableAgent
    name: str

    def _function(self) -> Any:
        return registered_function(self.executor, self.name)

    def read(self) -> str:
        return function_source(self._function())

    def write(self, value: str) -> None:
        new = compile_like(value, self._function(), label=f"{self.executor.name}.tools.{self.name}")
        self.executor.register_for_execution(name=self.name, silent_override=True)(new)

    def save(self) -> Any:
        return function_map(self.executor)[self.name]

    def load(self, state: Any) -> None:
        self.executor.register_function({self.name: state}, silent_override=True)

    def describe(self) -> str:
        return f"{self.executor.name}.register_for_execution({self.name!r})"


@dataclass
class TemplateBinding(Binding):
    """A GroupChat speaker-selection template, on the GroupChat and on its managers' copies."""

    groupchat: GroupChat
    attribute: str
    managers: list[GroupChatManager] = field(default_factory=list)

    def _homes(self) -> list[GroupChat]:
        homes = [self.groupchat]
        for manager in self.managers:
            homes.extend(manager_groupchat_copies(manager, self.groupchat))
        return homes

    def read(self) -> str:
        return getattr(self.groupchat, self.attribute)

    def write(self, value: str) -> None:
        for home in self._homes():
            setattr(home, self.attribute, value)

    def verify(self, value: str) -> None:
        stale = [h for h in self._homes() if getattr(h, self.attribute) != value]
        if stale:
            raise RuntimeError(f"{len(stale)} copy(ies) of the GroupChat still hold the old {self.attribute}")

    def save(self) -> Any:
        return [(home, getattr(home, self.attribute)) for home in self._homes()]

    def load(self, state: Any) -> None:
        for home, value in state:
            setattr(home, self.attribute, value)

    def describe(self) -> str:
        return f"GroupChat.{self.attribute}"


def _placeholder_check(allowed: tuple[str, ...], original: str, attribute: str) -> Any:
    kept = {f for _, f, _, _ in string.Formatter().parse(original) if f}

    def check(value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{attribute} is filled in with str.format: {exc} (double literal braces)") from None
        unknown = sorted(fields - set(allowed))
        if unknown and attribute == "select_speaker_message_template":
            raise ValueError(f"unknown placeholders {unknown}; AG2 fills in only {list(allowed)}")
        missing = sorted(kept - fields)
        if missing:
            raise ValueError(f"keep the placeholders {['{' + m + '}' for m in missing]}")
        return value

    return check


def manager_groupchat_copies(manager: GroupChatManager, groupchat: GroupChat) -> list[GroupChat]:
    """The shallow copies of ``groupchat`` the manager's reply functions run with.

    AG2's ``register_reply(config=groupchat)`` stores ``copy.copy(groupchat)`` in the private
    ``manager._reply_func_list[i]["config"]`` (its ``init_config`` is the original), and ``run_chat``
    reads the copy: a template written on the GroupChat alone would not be used (the private list is
    read by `_compat.reply_configs`; tests/ag2/test_ag2_compat.py fails if AG2 changes it).
    """
    return [
        entry["config"]
        for entry in _compat.reply_configs(manager)
        if entry.get("init_config") is groupchat
        and isinstance(entry.get("config"), GroupChat)
        and entry["config"] is not groupchat
    ]


def function_map(executor: ConversableAgent) -> dict[str, Any]:
    """The executor's registered tools (AG2's public read-only ``function_map`` property)."""
    return executor.function_map


def registered_function(executor: ConversableAgent, name: str) -> Any:
    """The user's function behind a registered tool.

    ``register_for_execution`` stores a wrapper (chat-context injection, result serialization)
    that keeps the user's function in a private attribute (`_compat.registered_origin`); a
    function registered through ``register_function({name: f})`` is stored as is. That function is
    itself a ``functools.wraps`` wrapper (dependency injection) whose code object is shared by
    every tool, so the ``__wrapped__`` chain is followed to the user's own function.
    """
    registered = function_map(executor)[name]
    return inspect.unwrap(_compat.registered_origin(registered))
