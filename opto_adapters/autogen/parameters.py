"""The trainable parameters of one AgentChat ``AssistantAgent``, and writing them back.

AgentChat has no public setter (``agent.system_message = ...`` is silently ignored), so values
are written with the route the notes verified on the wire (``shared/notes/autogen.md``, Route A),
into the private attributes the agent re-reads at the start of every turn:

- system message: ``agent._system_messages = [SystemMessage(content=...)]``;
- tool code and description: a new ``FunctionTool`` replaces the old one *in place* in the tool list
  the agent's ``StaticWorkbench`` shares (``agent._tools is agent._workbench[0]._tools``);
- temperature: not on the shared client (a client is often shared by several agents, and
  ``_create_args`` would change them all), but per agent: the recording client of this agent passes
  it in ``extra_create_args`` of every request (the public argument of ``ChatCompletionClient.create``).

Every write is checked: the next recorded request of the agent must carry the new system
message, tool descriptions and temperature (`Expectations`), else the run fails with
`WriteBackError`; a tool's new code is checked at once (the workbench must hold the new function).
"""

from __future__ import annotations

import __future__
import copy
import hashlib
import inspect
import linecache
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from autogen_core.models import SystemMessage
from autogen_core.tools import FunctionTool, StaticWorkbench

from opto_core.parameters import Parameter

from .graph_builder import ROLE_SETTING, ROLE_SYSTEM, ROLE_TOOL_CODE, ROLE_TOOL_DESCRIPTION

#: Bounds of the temperature parameter (OpenAI's range; other providers accept a subset).
TEMPERATURE_BOUNDS = (0.0, 2.0)
#: The temperature shown when the client sets none (the OpenAI default).
DEFAULT_TEMPERATURE = 1.0


class WriteBackError(RuntimeError):
    """A value was applied but the framework did not use it (the next request shows something else)."""


@dataclass
class _ToolSlot:
    """Where one FunctionTool lives: the lists holding it (the agent's and its workbench's)."""

    name: str
    lists: list[list[Any]]
    code: Parameter | None
    description: Parameter | None
    original_func: Callable[..., Any]

    def current(self) -> FunctionTool:
        for tools in self.lists:
            for tool in tools:
                if getattr(tool, "name", None) == self.name:
                    return tool
        raise WriteBackError(f"tool {self.name!r} is no longer in the agent's workbench")

    def replace(self, new_tool: FunctionTool) -> None:
        replaced = False
        for tools in self.lists:
            for index, tool in enumerate(tools):
                if getattr(tool, "name", None) == self.name:
                    tools[index] = new_tool
                    replaced = True
        if not replaced:
            raise WriteBackError(f"tool {self.name!r} is no longer in the agent's workbench")


@dataclass
class Expectations:
    """What the next request of an agent must carry after a write (checked by the recording client)."""

    system: tuple[str, str] | None = None  # (parameter name, value)
    settings: dict[str, tuple[str, Any]] = field(default_factory=dict)  # key -> (parameter name, value)
    tool_descriptions: dict[str, tuple[str, str]] = field(default_factory=dict)  # tool -> (parameter name, value)

    def __bool__(self) -> bool:
        return bool(self.system or self.settings or self.tool_descriptions)


class AgentParameters:
    """Find, read, validate, write back, snapshot and restore one agent's parameters.

    Parameter names: ``<agent>.system_message``, ``<agent>.tools.<tool>.code``,
    ``<agent>.tools.<tool>.description``, ``<agent>.temperature``.
    """

    def __init__(self, agent: Any, *, system_message: bool = True, tool_code: bool = True,
                 tool_descriptions: bool = True, temperature: bool = True,
                 temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> None:
        self.agent = agent
        self.prefix = agent.name
        self._lock = threading.RLock()
        self.settings_override: dict[str, Any] = {}
        self.expect = Expectations()
        self._compiled: dict[tuple[str, str], Callable[..., Any]] = {}
        self.roles: dict[str, Parameter] = {}

        system = self._system_value()
        self.system = Parameter(f"{self.prefix}.system_message", "text", system, trainable=system_message,
                                description=f"system message of agent {self.prefix}")
        self.roles[ROLE_SYSTEM] = self.system

        self.tools: dict[str, _ToolSlot] = {}
        for tool, lists in self._function_tools():
            self.tools[tool.name] = self._slot(tool, lists, tool_code, tool_descriptions)

        self.temperature: Parameter | None = None
        initial, explicit = self._client_temperature()
        self._temperature_explicit = explicit
        self.temperature = Parameter(
            f"{self.prefix}.temperature", "float", initial, trainable=temperature,
            lower=temperature_bounds[0], upper=temperature_bounds[1],
            description=f"sampling temperature of agent {self.prefix}'s model calls",
            meta={"route": "extra_create_args"})
        self.roles[ROLE_SETTING + "temperature"] = self.temperature

    # ----- discovery --------------------------------------------------------------------------
    def _system_value(self) -> str:
        messages = self.agent._system_messages
        if messages and isinstance(messages[0].content, str):
            return messages[0].content
        return ""

    def _client_temperature(self) -> tuple[float, bool]:
        """(temperature, whether the client sets it) - read only, from the client's create args."""
        client = getattr(self.agent._model_client, "inner", self.agent._model_client)
        create_args = getattr(client, "_create_args", None)
        if isinstance(create_args, dict) and isinstance(create_args.get("temperature"), (int, float)):
            return float(create_args["temperature"]), True
        return DEFAULT_TEMPERATURE, False

    def _function_tools(self) -> list[tuple[FunctionTool, list[list[Any]]]]:
        """Every FunctionTool of the agent with the lists that hold it (agent list + workbench list)."""
        found: dict[int, tuple[FunctionTool, list[list[Any]]]] = {}
        holders: list[list[Any]] = []
        if isinstance(getattr(self.agent, "_tools", None), list):
            holders.append(self.agent._tools)
        for workbench in getattr(self.agent, "_workbench", []) or []:
            if isinstance(workbench, StaticWorkbench) and isinstance(workbench._tools, list):
                if not any(workbench._tools is h for h in holders):
                    holders.append(workbench._tools)
        for holder in holders:
            for tool in holder:
                if isinstance(tool, FunctionTool):
                    entry = found.setdefault(id(tool), (tool, []))
                    entry[1].append(holder)
        return list(found.values())

    def _slot(self, tool: FunctionTool, lists: list[list[Any]], code_on: bool, desc_on: bool) -> _ToolSlot:
        func = tool._func
        name = tool.name
        code_param = None
        source, why_not = _source_of(func)
        overridden = any(name in getattr(wb, "_tool_overrides", {}) for wb in getattr(self.agent, "_workbench", []) or [])
        if source is not None:
            code_param = Parameter(
                f"{self.prefix}.tools.{name}.code", "code", source, trainable=code_on and why_not is None,
                description=f"Python code of tool {name} of agent {self.prefix}; its JSON schema (argument names "
                            f"and types) must stay the same" + (f" (frozen: {why_not})" if why_not else ""),
                checks=[self._schema_check(name)], meta={"tool": name})
            self.roles[ROLE_TOOL_CODE + name] = code_param
        desc_param = Parameter(
            f"{self.prefix}.tools.{name}.description", "text", tool.description,
            trainable=desc_on and not overridden,
            description=f"description of tool {name}, shown to agent {self.prefix}'s model"
                        + (" (frozen: the workbench overrides it)" if overridden else ""),
            checks=[_non_empty], meta={"tool": name})
        self.roles[ROLE_TOOL_DESCRIPTION + name] = desc_param
        return _ToolSlot(name, lists, code_param, desc_param, func)

    # ----- reading ----------------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """Every parameter with its current value (read back from the live agent)."""
        with self._lock:
            self.system.value = self._system_value()
            result = [self.system]
            for slot in self.tools.values():
                tool = slot.current()
                if slot.code is not None:
                    result.append(slot.code)
                if slot.description is not None:
                    slot.description.value = tool.description
                    result.append(slot.description)
            if self.temperature is not None:
                if "temperature" in self.settings_override:
                    self.temperature.value = self.settings_override["temperature"]
                result.append(self.temperature)
            return result

    def by_name(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters()}

    def role_map(self) -> dict[str, Parameter]:
        """Role -> parameter, for the graph builder (current values). A frozen temperature that no one
        set is left out: it is the provider's default, not a value of this workflow."""
        self.parameters()
        roles = dict(self.roles)
        temperature = self.temperature
        if temperature is not None and not temperature.trainable and not self._temperature_explicit \
                and "temperature" not in self.settings_override:
            roles.pop(ROLE_SETTING + "temperature", None)
        return roles

    # ----- checks -----------------------------------------------------------------------------
    def _schema_check(self, tool_name: str) -> Callable[[str], str]:
        def check(source: str) -> str:
            slot = self.tools[tool_name]
            old = slot.current()
            func = self.compile(tool_name, source)
            new = _new_tool(old, func, old.description)
            old_schema, new_schema = old.schema.get("parameters"), new.schema.get("parameters")
            if old_schema != new_schema:
                raise ValueError(f"the tool's JSON schema changed; it must stay {_compact(old_schema)}, "
                                 f"the new code gives {_compact(new_schema)}")
            if old.return_type() != new.return_type():
                raise ValueError(f"the tool's return type changed from {old.return_type()!r} to {new.return_type()!r}")
            return source

        return check

    def compile(self, tool_name: str, source: str) -> Callable[..., Any]:
        """Compile a tool's new source in (a copy of) the original function's module globals."""
        key = (tool_name, source)
        cached = self._compiled.get(key)
        if cached is not None:
            return cached
        slot = self.tools[tool_name]
        original = slot.original_func
        digest = hashlib.sha1(source.encode()).hexdigest()[:10]
        filename = f"<opto {self.prefix}.tools.{tool_name} {digest}>"
        # inspect.getsource (used by FunctionTool.dump_component) reads sources through linecache.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        flags = original.__code__.co_flags & __future__.annotations.compiler_flag \
            if hasattr(original, "__code__") else 0
        namespace = dict(getattr(original, "__globals__", {}))
        try:
            code = compile(source, filename, "exec", flags=flags, dont_inherit=True)
            exec(code, namespace)  # noqa: S102 - the optimizer's code for this tool, validated first
        except Exception as exc:  # an import that fails, a decorator that raises...
            raise ValueError(f"the code fails when defined: {type(exc).__name__}: {exc}") from None
        function_name = _def_name(source)
        func = namespace.get(function_name)
        if not callable(func):
            raise ValueError(f"the code does not define a function named {function_name!r}")
        self._compiled[key] = func
        return func

    # ----- writing ----------------------------------------------------------------------------
    def apply(self, updates: dict[str, Any]) -> list[str]:
        """Write validated values into the live agent; return the names written.

        Unknown names raise `KeyError` before anything is written.
        """
        with self._lock:
            params = self.by_name()
            unknown = [name for name in updates if name not in params]
            if unknown:
                raise KeyError(f"agent {self.prefix!r} has no parameters {unknown}; known: {sorted(params)}")
            # Compile every tool first, so that a failure leaves the agent untouched.
            # An unchanged value is not rewritten (the tool keeps its original function object).
            updates = {name: value for name, value in updates.items() if params[name].value != value
                       or name in (self.system.name, getattr(self.temperature, "name", None))}
            new_funcs: dict[str, Callable[..., Any]] = {}
            for slot in self.tools.values():
                if slot.code is not None and slot.code.name in updates:
                    new_funcs[slot.name] = self.compile(slot.name, updates[slot.code.name])
            written: list[str] = []
            if self.system.name in updates:
                value = updates[self.system.name]
                self.agent._system_messages = [SystemMessage(content=value)] if value else []
                self.system.value = value
                self.expect.system = (self.system.name, value)
                written.append(self.system.name)
            for slot in self.tools.values():
                code_name = slot.code.name if slot.code is not None else None
                desc_name = slot.description.name if slot.description is not None else None
                if code_name not in updates and desc_name not in updates:
                    continue
                old = slot.current()
                func = new_funcs.get(slot.name, old._func)
                description = updates.get(desc_name, old.description) if desc_name else old.description
                new = _new_tool(old, func, description)
                slot.replace(new)
                if slot.current() is not new or slot.current()._func is not func:
                    raise WriteBackError(f"tool {slot.name!r}: the workbench does not hold the new tool after the write")
                if code_name in updates:
                    slot.code.value = updates[code_name]
                    written.append(code_name)
                if desc_name in updates:
                    slot.description.value = description
                    self.expect.tool_descriptions[slot.name] = (desc_name, description)
                    written.append(desc_name)
            if self.temperature is not None and self.temperature.name in updates:
                value = float(updates[self.temperature.name])
                self.settings_override["temperature"] = value
                self.temperature.value = value
                self.expect.settings["temperature"] = (self.temperature.name, value)
                written.append(self.temperature.name)
            return written

    def snapshot(self) -> dict[str, Any]:
        """Everything `restore` needs: the exact objects (tools, system messages), not just values."""
        with self._lock:
            return {
                "system_messages": list(self.agent._system_messages),
                "tools": {slot.name: slot.current() for slot in self.tools.values()},
                "codes": {slot.name: slot.code.value for slot in self.tools.values() if slot.code is not None},
                "settings_override": copy.deepcopy(self.settings_override),
                "temperature": self.temperature.value if self.temperature is not None else None,
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self.agent._system_messages = list(snapshot["system_messages"])
            self.system.value = self._system_value()
            self.expect.system = (self.system.name, self.system.value)
            for name, tool in snapshot["tools"].items():
                slot = self.tools[name]
                slot.replace(tool)
                if slot.code is not None:
                    slot.code.value = snapshot["codes"][name]
                if slot.description is not None:
                    slot.description.value = tool.description
                    self.expect.tool_descriptions[name] = (slot.description.name, tool.description)
            self.settings_override = copy.deepcopy(snapshot["settings_override"])
            if self.temperature is not None:
                self.temperature.value = snapshot["temperature"]
                if "temperature" in self.settings_override:
                    self.expect.settings["temperature"] = (self.temperature.name, self.settings_override["temperature"])
                else:
                    self.expect.settings.pop("temperature", None)

    # ----- checking a request -----------------------------------------------------------------
    def verify_request(self, messages: list[Any], tools: list[Any], extra_create_args: dict[str, Any]) -> list[str]:
        """Check the pending expectations against one outgoing request; return the names verified.

        Raises `WriteBackError` when the request contradicts a value that was applied.
        """
        with self._lock:
            expect = self.expect
            if not expect:
                return []
            verified: list[str] = []
            if expect.system is not None:
                name, value = expect.system
                first = messages[0] if messages else None
                sent = first.content if isinstance(first, SystemMessage) else ""
                if sent != value:
                    raise WriteBackError(f"{name}: the request carries system message {_short(sent)!r}, "
                                         f"not the applied value {_short(value)!r}")
                verified.append(name)
                expect.system = None
            for key, (name, value) in list(expect.settings.items()):
                if extra_create_args.get(key) != value:
                    raise WriteBackError(f"{name}: the request carries {key}={extra_create_args.get(key)!r}, "
                                         f"not the applied value {value!r}")
                verified.append(name)
                del expect.settings[key]
            if tools:  # a request without tools (the reflection call) says nothing about descriptions
                offered = {_tool_name(t): _tool_description(t) for t in tools}
                for tool, (name, value) in list(expect.tool_descriptions.items()):
                    if tool not in offered:
                        continue
                    if offered[tool] != value:
                        raise WriteBackError(f"{name}: the request offers tool {tool!r} with description "
                                             f"{_short(offered[tool])!r}, not the applied value {_short(value)!r}")
                    verified.append(name)
                    del expect.tool_descriptions[tool]
            return verified


# ----- helpers ----------------------------------------------------------------------------------
def _new_tool(old: FunctionTool, func: Callable[..., Any], description: str) -> FunctionTool:
    return FunctionTool(func, description=description, name=old.name,
                        global_imports=getattr(old, "_global_imports", []), strict=getattr(old, "_strict", False))


def _source_of(func: Any) -> tuple[str | None, str | None]:
    """``(source, reason it must stay frozen or None)``; source None when it is no plain function."""
    if inspect.ismethod(func) or not inspect.isfunction(func):
        return None, None
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None, None
    if func.__name__ == "<lambda>":
        return None, None
    if func.__code__.co_freevars:
        return source, f"it uses variables of an enclosing function ({', '.join(func.__code__.co_freevars)})"
    try:
        Parameter("probe", "code", source)
    except Exception:  # not one plain function (several defs, module code...): not a code parameter
        return None, None
    if any(line.lstrip().startswith("@") for line in source.splitlines()):
        return source, "it is decorated (a recompiled copy would lose or repeat the decorator)"
    return source, None


def _def_name(source: str) -> str:
    import ast

    for statement in ast.parse(source).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return statement.name
    raise ValueError("the code defines no function")


def _tool_name(tool: Any) -> str:
    return tool["name"] if isinstance(tool, dict) else tool.name


def _tool_description(tool: Any) -> str:
    if isinstance(tool, dict):
        return tool.get("description", "")
    return tool.description


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("a tool description must not be empty (the model chooses tools by it)")
    return value


def _compact(schema: Any) -> str:
    import json

    return json.dumps(schema, sort_keys=True)[:300]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
