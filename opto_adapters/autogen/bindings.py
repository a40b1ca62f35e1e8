"""Where each AgentChat parameter lives, as `opto_core.kernel.binding.Binding`s: one small class per home."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from autogen_core.code_executor import Import
from autogen_core.models import SystemMessage
from autogen_core.tools import FunctionTool
from pydantic import TypeAdapter

from opto_adapters.autogen import _compat
from opto_core.engine.executors import InfrastructureError
from opto_core.kernel.binding import Binding
from opto_core.kernel.code import compile_like, function_source
from opto_core.kernel.templates import Template

if TYPE_CHECKING:
    from opto_adapters.autogen.parameters import AgentParameters

#: Bounds of the temperature parameter (OpenAI's range; other providers accept a subset).
TEMPERATURE_BOUNDS = (0.0, 2.0)


#: The temperature shown when the client sets none (the OpenAI default).
DEFAULT_TEMPERATURE = 1.0


class WriteBackError(InfrastructureError):
    """A value was applied but the framework did not use it (the next request shows something else).

    An `InfrastructureError`: the adapter failed, not the workflow, so the loop never keeps a step on it."""


@dataclass
class Expectations:
    """What the next request of an agent must carry after a write (checked by the recording client)."""

    system: tuple[str, str] | None = None  # (parameter name, value)
    settings: dict[str, tuple[str, Any]] = field(default_factory=dict)  # key -> (parameter name, value)
    tool_descriptions: dict[str, tuple[str, str]] = field(default_factory=dict)  # tool -> (parameter name, value)

    def __bool__(self) -> bool:
        return bool(self.system or self.settings or self.tool_descriptions)


@dataclass
class ToolSlot:
    """One FunctionTool's home: the lists holding it (the agent's and its workbench's)."""

    name: str
    lists: list[list[Any]]
    original_func: Callable[..., Any]

    def current(self) -> FunctionTool:
        for tools in self.lists:
            for tool in tools:
                if getattr(tool, "name", None) == self.name:
                    return tool
        raise WriteBackError(f"tool {self.name!r} is no longer in the agent's workbench")

    def replace(self, new_tool: FunctionTool) -> None:
        found = False
        for tools in self.lists:
            for index, tool in enumerate(tools):
                if getattr(tool, "name", None) == self.name:
                    tools[index], found = new_tool, True
        if not found:
            raise WriteBackError(f"tool {self.name!r} is no longer in the agent's workbench")

    def rebuild(self, func: Callable[..., Any] | None = None, description: str | None = None) -> None:
        old = self.current()
        self.replace(
            FunctionTool(
                func or _compat.tool_function(old),
                description=old.description if description is None else description,
                name=old.name,
                global_imports=_global_imports(old),
                strict=bool(old.schema.get("strict", False)),
            )
        )


def _global_imports(tool: FunctionTool) -> list[Any]:
    """The imports a tool's saved config carries (``dump_component``), kept when the tool is rebuilt."""
    try:
        config = tool.dump_component().config
    except Exception:  # a function without readable source cannot be dumped: it carries none
        return []
    return list(TypeAdapter(list[Import]).validate_python(config.get("global_imports") or []))


class SystemMessageBinding(Binding):
    def __init__(self, owner: AgentParameters, name: str) -> None:
        self.owner, self.name = owner, name

    def read(self) -> str:
        messages = _compat.system_messages(self.owner.agent)
        return messages[0].content if messages and isinstance(messages[0].content, str) else ""

    def write(self, value: str) -> None:
        _compat.set_system_messages(self.owner.agent, [SystemMessage(content=value)] if value else [])
        self.owner.expect.system = (self.name, value)

    def verify(self, value: str) -> None:
        if self.read() != value:
            raise WriteBackError(f"the agent still holds system message {self.read()!r}")

    def save(self) -> list[Any]:
        return list(_compat.system_messages(self.owner.agent))  # the exact message objects

    def load(self, state: list[Any]) -> None:
        _compat.set_system_messages(self.owner.agent, list(state))
        self.owner.expect.system = (self.name, self.read())

    def describe(self) -> str:
        return f"the system message of AssistantAgent {self.owner.prefix!r}"


class SystemTemplateBinding(Binding):
    """The template an agent's system message was filled from (``SYSTEM.format(company=...)``).

    The agent holds the filled-in text only; this binding keeps the values the template's
    placeholders had in it (matched by the core's `opto_core.kernel.templates.Template`), so a new
    template is filled with the same values (or with ``fill(values)`` per run) and written where
    the agent reads its system message. The recording client then checks the next request shows it.
    """

    def __init__(self, owner: AgentParameters, name: str, template: str, values: dict[str, str], style: str) -> None:
        self.owner, self.name, self.template, self.values, self.style = owner, name, template, dict(values), style

    def rendered(self, template: str | None = None) -> str:
        parsed = Template.parse(template if template is not None else self.template, self.style)
        return parsed.render(self.values) if parsed is not None else (template or self.template)

    def fill(self, values: dict[str, Any]) -> None:
        """Fill the current template with new values (a run's), as the program would."""
        self.values.update({k: str(v) for k, v in values.items()})
        self._write_text(self.rendered())

    def _write_text(self, text: str) -> None:
        _compat.set_system_messages(self.owner.agent, [SystemMessage(content=text)] if text else [])
        self.owner.expect.system = (self.name, text)

    def read(self) -> str:
        return self.template

    def write(self, value: str) -> None:
        text = self.rendered(value)  # the placeholders were checked by the parameter: all are filled
        self.template = value
        self._write_text(text)

    def verify(self, value: str) -> None:
        messages = _compat.system_messages(self.owner.agent)
        held = messages[0].content if messages else ""
        if held != self.rendered(value):
            raise WriteBackError(f"the agent holds system message {held!r}, not the template filled in")

    def save(self) -> Any:
        return self.template, dict(self.values), list(_compat.system_messages(self.owner.agent))

    def load(self, state: Any) -> None:
        self.template, self.values, messages = state[0], dict(state[1]), list(state[2])
        _compat.set_system_messages(self.owner.agent, messages)
        self.owner.expect.system = (self.name, messages[0].content if messages else "")

    def describe(self) -> str:
        return f"the system message of AssistantAgent {self.owner.prefix!r}, filled from a template"


class ToolCodeBinding(Binding):
    def __init__(self, owner: AgentParameters, slot: ToolSlot) -> None:
        self.owner, self.slot = owner, slot

    def read(self) -> str:
        return function_source(_compat.tool_function(self.slot.current()))

    def write(self, source: str) -> None:
        if self.read().rstrip() == source.rstrip():
            return  # unchanged: the tool keeps its function object
        label = f"{self.owner.prefix}.tools.{self.slot.name}"
        self.slot.rebuild(func=compile_like(source, self.slot.original_func, label=label))

    def verify(self, source: str) -> None:
        if self.read().rstrip() != source.rstrip():
            raise WriteBackError(f"tool {self.slot.name!r}: the workbench does not hold the new code after the write")

    def save(self) -> FunctionTool:
        return self.slot.current()

    def load(self, state: FunctionTool) -> None:
        self.slot.replace(state)

    def describe(self) -> str:
        return f"FunctionTool {self.slot.name!r} of agent {self.owner.prefix!r}"


class ToolDescriptionBinding(ToolCodeBinding):
    def __init__(self, owner: AgentParameters, slot: ToolSlot, name: str) -> None:
        super().__init__(owner, slot)
        self.name = name

    def read(self) -> str:
        return self.slot.current().description

    def write(self, value: str) -> None:
        if self.read() != value:
            self.slot.rebuild(description=value)
        self.owner.expect.tool_descriptions[self.slot.name] = (self.name, value)

    def verify(self, value: str) -> None:
        if self.read() != value:
            raise WriteBackError(f"tool {self.slot.name!r} still has description {self.read()!r}")

    def load(self, state: FunctionTool) -> None:
        self.slot.replace(state)
        self.owner.expect.tool_descriptions[self.slot.name] = (self.name, state.description)


class TemperatureBinding(Binding):
    """Per agent: an override the agent's recording client sends (and saves); unset = the client's own."""

    def __init__(self, owner: AgentParameters, name: str) -> None:
        self.owner, self.name = owner, name

    def read(self) -> float:
        override = self.owner.settings_override.get("temperature")
        return float(override) if override is not None else self.owner.client_temperature()[0]

    def write(self, value: float) -> None:
        self.owner.settings_override["temperature"] = float(value)
        self.owner.expect.settings["temperature"] = (self.name, float(value))

    def save(self) -> float | None:
        return self.owner.settings_override.get("temperature")

    def load(self, state: float | None) -> None:
        if state is None:
            self.owner.settings_override.pop("temperature", None)
            self.owner.expect.settings.pop("temperature", None)
        else:
            self.write(state)

    def describe(self) -> str:
        return f"the temperature agent {self.owner.prefix!r} sends"
