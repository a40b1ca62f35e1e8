"""The trainable values of one AgentChat ``AssistantAgent``, as bindings of the shared write-back model.

AgentChat has no public setter (``agent.system_message = ...`` is silently ignored), so each value
is written where the agent re-reads it at the start of every turn (Route A of
``shared/notes/autogen.md``, checked on the wire there):

- system message: the agent's system messages (`_compat.set_system_messages`);
- tool code and description: a new ``FunctionTool`` replaces the old one *in place* in the tool
  lists of the agent's ``StaticWorkbench``es (`_compat.tool_lists`; the agent's ``tools=`` list is
  the first one's); new code is compiled by `opto_core.kernel.code.compile_like` (the original's
  globals and closure);
- temperature: per agent, not on the client (one client is often shared by several agents): the
  agent's `RecordingClient` adds it to ``extra_create_args`` of every request, and puts it into
  the client config ``dump_component()`` saves.

`AgentParameters` is a `opto_core.kernel.binding.BoundParameters`: validation, ordered writes with
rollback, snapshot/restore and include/exclude are the core's. What stays here is AgentChat's
part: where each value lives, and the expectations the recording client checks on the next
request (a write the framework ignored fails that run with `WriteBackError`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from autogen_core.models import SystemMessage
from autogen_core.tools import FunctionTool

from opto_adapters.autogen import _compat
from opto_adapters.autogen.bindings import (
    DEFAULT_TEMPERATURE,
    TEMPERATURE_BOUNDS,
    Expectations,
    SystemMessageBinding,
    SystemTemplateBinding,
    TemperatureBinding,
    ToolCodeBinding,
    ToolDescriptionBinding,
    ToolSlot,
    WriteBackError,
)
from opto_adapters.autogen.tracing import client_config
from opto_core.kernel.binding import Binding, BoundParameters, select
from opto_core.kernel.code import (
    SourceUnavailable,
    function_source,
    keeps_signature_bindings,
    unwrap,
)
from opto_core.kernel.conversation import (
    ROLE_SETTING,
    ROLE_SYSTEM,
    ROLE_TOOL_CODE,
    ROLE_TOOL_DESCRIPTION,
)
from opto_core.kernel.graph import shorten
from opto_core.kernel.parameters import InvalidValue, Parameter
from opto_core.kernel.templates import Template

# ----- where each value lives ---------------------------------------------------------------------


# ----- one agent's parameters ---------------------------------------------------------------------
class AgentParameters(BoundParameters):
    """One agent's parameters with their bindings.

    Names: ``<agent>.system_message``, ``<agent>.tools.<tool>.code``,
    ``<agent>.tools.<tool>.description``, ``<agent>.temperature``. The keyword switches freeze a
    kind (they become exclude patterns); ``include``/``exclude`` are the core's glob rule.
    """

    def __init__(
        self,
        agent: Any,
        *,
        system_message: bool = True,
        tool_code: bool = True,
        tool_descriptions: bool = True,
        temperature: bool = True,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
        client: Any = None,
        system_template: str | Parameter | None = None,
    ) -> None:
        super().__init__()
        self.agent = agent
        # the agent's own model client: its settings are the values shown before any write
        self.client = client if client is not None else _compat.model_client(agent)
        self.prefix = agent.name
        self.settings_override: dict[str, Any] = {}
        self.expect = Expectations()
        self.roles: dict[str, Parameter] = {}
        self.tools: dict[str, ToolSlot] = {}
        self.template: SystemTemplateBinding | None = None
        if system_template is None:
            self.system = self._add(
                ROLE_SYSTEM,
                Parameter(
                    f"{self.prefix}.system_message", "text", "", description=f"system message of agent {self.prefix}"
                ),
                lambda p: SystemMessageBinding(self, p.name),
            )
        else:
            self.system = self._add(ROLE_SYSTEM, *self._system_template(system_template))
        for tool, lists in _function_tools(agent):
            self._add_tool(tool, lists)
        self.temperature = self._add(
            ROLE_SETTING + "temperature",
            Parameter(
                f"{self.prefix}.temperature",
                "float",
                self.client_temperature()[0],
                lower=temperature_bounds[0],
                upper=temperature_bounds[1],
                description=f"sampling temperature of agent {self.prefix}'s model calls",
                meta={"route": "extra_create_args"},
            ),
            lambda p: TemperatureBinding(self, p.name),
        )
        switches = {self.system.name: system_message, f"{self.prefix}.temperature": temperature}
        for name in self.names():
            if name.endswith(".code"):
                switches[name] = tool_code
            elif name.endswith(".description"):
                switches[name] = tool_descriptions
        frozen = [name for name, on in switches.items() if not on]
        excluded = frozen + ([exclude] if isinstance(exclude, str) else list(exclude or []))
        if include is not None or excluded:
            self.freeze_except(select(self.names(), include, excluded or None))
        self.parameters()  # current values

    def _system_template(self, given: str | Parameter) -> tuple[Parameter, Callable[[Parameter], Binding]]:
        """The template the agent's system message was filled from, as its system parameter.

        ``given`` is the template text (``SYSTEM_TEMPLATE``) or a `Parameter` of yours holding it; it
        must produce the system message the agent holds now, which gives the values its
        placeholders had (`opto_core.kernel.templates.Template.match`)."""
        mine = given if isinstance(given, Parameter) else None
        text = mine.value if mine is not None else given
        messages = _compat.system_messages(self.agent)
        current = messages[0].content if messages and isinstance(messages[0].content, str) else ""
        template = (
            Template.parse(text, mine.template if mine is not None and isinstance(mine.template, str) else None)
            if isinstance(text, str)
            else None
        )
        if template is None:
            raise ValueError(
                f"system_template for agent {self.prefix!r} has no placeholder ({text!r:.80}): pass the "
                f"template the system message is filled from, e.g. \"You work for {{company}}.\""
            )
        match = template.match(current)
        if match is None:
            raise ValueError(
                f"agent {self.prefix!r}'s system message {current!r:.120} is not an output of the "
                f"system_template {text!r:.120}: pass the template it was filled from"
            )
        if mine is not None and mine.template_model is None:
            raise ValueError(
                f"system_template Parameter {mine.name!r} must be a template: Parameter(..., template=True)"
            )
        parameter = mine or Parameter(
            f"{self.prefix}.system_template",
            "text",
            text,
            template=template.style,
            description=f"the template agent {self.prefix}'s system message is filled from (placeholders "
            f"{', '.join(template.source_of(n) for n in template.placeholders)})",
        )

        def bind(p: Parameter) -> Binding:
            self.template = SystemTemplateBinding(self, p.name, text, match.values, template.style)
            return self.template

        return parameter, bind

    def fill_template(self, values: dict[str, Any]) -> None:
        """Fill the system template with one run's values (``TeamTarget(template_values=...)``)."""
        if self.template is None:
            raise ValueError(f"agent {self.prefix!r} has no system_template to fill")
        unknown = set(values) - set(self.template.values)
        if unknown:
            raise KeyError(
                f"agent {self.prefix!r}'s system template has no placeholder(s) {sorted(unknown)}; it has "
                f"{sorted(self.template.values)}"
            )
        self.template.fill(values)

    def _add(self, role: str, parameter: Parameter, binding: Callable[[Parameter], Binding]) -> Parameter:
        self.roles[role] = parameter
        return self.add(parameter, binding(parameter))

    def _add_tool(self, tool: FunctionTool, lists: list[list[Any]]) -> None:
        name = tool.name
        func = _compat.tool_function(tool)
        slot = self.tools[name] = ToolSlot(name, lists, func)
        source, why_frozen = _code_of(func)
        if source is not None:
            self._add(
                ROLE_TOOL_CODE + name,
                Parameter(
                    f"{self.prefix}.tools.{name}.code",
                    "code",
                    source,
                    trainable=why_frozen is None,
                    description=f"Python code of tool {name} of agent {self.prefix}; its JSON schema (argument names "
                    f"and types) must stay the same" + (f" (frozen: {why_frozen})" if why_frozen else ""),
                    checks=[keeps_signature_bindings(func)],
                    meta={"tool": name},
                    origin=func,
                ),
                lambda p: ToolCodeBinding(self, slot),
            )
        overridden = name in _overridden_tools(self.agent)
        self._add(
            ROLE_TOOL_DESCRIPTION + name,
            Parameter(
                f"{self.prefix}.tools.{name}.description",
                "text",
                tool.description,
                trainable=not overridden,
                description=f"description of tool {name}, shown to agent {self.prefix}'s model"
                + (" (frozen: the workbench overrides it)" if overridden else ""),
                checks=[_non_empty],
                meta={"tool": name},
            ),
            lambda p: ToolDescriptionBinding(self, slot, p.name),
        )

    def client_temperature(self) -> tuple[float, bool]:
        """(temperature, whether the client sets it), read from the client's saved config."""
        temperature = client_config(self.client).get("temperature")
        if isinstance(temperature, (int, float)):
            return float(temperature), True
        return DEFAULT_TEMPERATURE, False

    def by_name(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters()}

    def role_map(self) -> dict[str, Parameter]:
        """Role -> parameter for the conversation builder. A frozen temperature nobody set is left
        out: it is the provider's default, not a value of this workflow."""
        self.parameters()
        roles = dict(self.roles)
        if (
            not self.temperature.trainable
            and not self.client_temperature()[1]
            and "temperature" not in self.settings_override
        ):
            roles.pop(ROLE_SETTING + "temperature", None)
        return roles

    # ----- checking a request (called by the recording client) -------------------------------
    def verify_request(self, messages: list[Any], tools: list[Any], extra_create_args: dict[str, Any]) -> list[str]:
        """Check the pending expectations against one outgoing request; return the names verified.

        Raises `WriteBackError` when the request contradicts a value that was applied.
        """
        expect = self.expect
        if not expect:
            return []
        verified: list[str] = []
        if expect.system is not None:
            name, value = expect.system
            first = messages[0] if messages else None
            sent = first.content if isinstance(first, SystemMessage) else ""
            if sent != value:
                raise WriteBackError(
                    f"{name}: the request carries system message {shorten(sent, 80)!r}, "
                    f"not the applied value {shorten(value, 80)!r}"
                )
            verified.append(name)
            expect.system = None
        for key, (name, value) in list(expect.settings.items()):
            if extra_create_args.get(key) != value:
                raise WriteBackError(
                    f"{name}: the request carries {key}={extra_create_args.get(key)!r}, not the applied value {value!r}"
                )
            verified.append(name)
            del expect.settings[key]
        if tools:  # a request without tools (the reflection call) says nothing about descriptions
            offered = {
                _tool_name(t): (t.get("description", "") if isinstance(t, dict) else t.description) for t in tools
            }
            for tool, (name, value) in list(expect.tool_descriptions.items()):
                if tool not in offered:
                    continue
                if offered[tool] != value:
                    raise WriteBackError(
                        f"{name}: the request offers tool {tool!r} with description "
                        f"{shorten(offered[tool], 80)!r}, not the applied value {shorten(value, 80)!r}"
                    )
                verified.append(name)
                del expect.tool_descriptions[tool]
        return verified


# ----- discovery, the shape every adapter has -------------------------------------------------------
def bound_parameters(
    obj: Any, *, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **options: Any
) -> BoundParameters:
    """The parameters of an AgentChat agent or team with their bindings: a `BoundParameters`.

    ``obj``: an ``AssistantAgent`` (wrapped in an `OptoAgent` unless it is already: its values are
    written through the recording client), an `OptoAgent`, a team (wrapped with `wrap_team`: one
    write-back model over all its agents) or one of their targets. ``include``/``exclude`` freeze
    what they leave out (the wrapped objects keep one set of parameters: this changes theirs).
    ``options`` go to a new `OptoAgent` or `wrap_team`.
    """
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.teams import BaseGroupChat

    from opto_adapters.autogen.agent import OptoAgent, wrapper_of
    from opto_adapters.autogen.target import AgentTarget, TeamTarget, wrap_team

    bound: BoundParameters
    if isinstance(obj, (AgentTarget, TeamTarget)):
        bound = obj.bound
    elif isinstance(obj, OptoAgent):
        bound = obj.params
    elif isinstance(obj, BaseGroupChat):
        bound = wrap_team(obj, **options).bound
    elif isinstance(obj, AssistantAgent):
        wrapper = wrapper_of(obj)  # wrapped before: the same bindings
        bound = (wrapper or OptoAgent(obj, **options)).params  # its client passes calls through outside runs
    else:
        raise TypeError(
            f"expected an AgentChat AssistantAgent, team, OptoAgent or target, "
            f"got {type(obj).__module__}.{type(obj).__name__}"
        )
    if include is not None or exclude is not None:
        bound.freeze_except(select(bound.names(), include, exclude))
    return bound


def parameters_of(
    obj: Any, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **options: Any
) -> list[Parameter]:
    """The parameters ``include``/``exclude`` select (see `bound_parameters`, which wraps ``obj``),
    with their current values; nothing is frozen."""
    bound = bound_parameters(obj, **options)
    chosen = select(bound.names(), include, exclude)
    return [p for p in bound.parameters() if p.name in chosen]


# ----- finding the tools --------------------------------------------------------------------------
def _function_tools(agent: Any) -> list[tuple[FunctionTool, list[list[Any]]]]:
    """Every FunctionTool of the agent with the workbench lists that hold it."""
    found: dict[int, tuple[FunctionTool, list[list[Any]]]] = {}
    for holder in _compat.tool_lists(agent):
        for tool in holder:
            if isinstance(tool, FunctionTool):
                found.setdefault(id(tool), (tool, []))[1].append(holder)
    return list(found.values())


def _overridden_tools(agent: Any) -> set[str]:
    """Tools whose name or description a workbench overrides (read from its saved config)."""
    try:
        workbenches = agent.dump_component().config.get("workbench") or []
    except Exception:  # a tool without readable source cannot be dumped: no override is known
        return set()
    names: set[str] = set()
    for workbench in workbenches:
        names.update((workbench.get("config") or {}).get("tool_overrides") or {})
    return names


def _code_of(func: Any) -> tuple[str | None, str | None]:
    """``(source, reason it stays frozen or None)``; no source for what is not one plain function."""
    if inspect.ismethod(func) or not inspect.isfunction(func) or func.__name__ == "<lambda>":
        return None, None
    try:
        source = function_source(func)
        Parameter("probe", "code", source)  # the core's rule: one plain function
        written = inspect.getsource(unwrap(func)) if unwrap(func) is func else "@"
    except (SourceUnavailable, OSError, TypeError, InvalidValue):
        return None, None
    if func.__code__.co_freevars:  # kept frozen as before: the closure is the user's, not ours to change
        return source, f"it uses variables of an enclosing function ({', '.join(func.__code__.co_freevars)})"
    if written.lstrip().startswith("@"):
        return source, "it is decorated (a recompiled copy would lose or repeat the decorator)"
    return source, None


def _tool_name(tool: Any) -> str:
    return tool["name"] if isinstance(tool, dict) else tool.name


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("a tool description must not be empty (the model chooses tools by it)")
    return value
