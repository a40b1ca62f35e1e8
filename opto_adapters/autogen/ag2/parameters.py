"""The parameters of classic AutoGen (AG2) agents, as bindings of the shared write-back model.

Where each value lives in AG2 0.14, and how a write reaches the next model request:

- ``<agent>.system_message`` (text): ``agent.update_system_message`` (public; no rebuild).
- ``<agent>.<setting>`` (``temperature``, ``top_p``, ``max_tokens``, ...; float/int with bounds): the
  agent deep-copied its ``llm_config`` and copied top-level settings into every ``config_list``
  entry, where the entry wins; so the value is set on the top level *and every entry*, then the
  client is rebuilt with ``OpenAIWrapper(**agent.llm_config)`` (what AG2's own
  ``update_tool_signature`` does). Only settings the ``llm_config`` sets are parameters.
- ``<caller>.tools.<name>.description`` (text): the tool schema in ``caller.llm_config["tools"]``,
  edited in place (order kept), client rebuilt.
- ``<executor>.tools.<name>.code`` (code): ``executor.register_for_execution(name, silent_override=True)``
  with the new function, compiled only by `opto_core.kernel.code.compile_like`. The schema advertised
  to the model is derived from the signature, which a code value must keep (checked on the parsed
  source by `Parameter.validate`, before anything runs), so the advertised schema stays the same.
- ``<manager>.select_speaker_message_template`` / ``.select_speaker_prompt_template`` (text): the
  GroupChat's "auto" selection prompts, on the GroupChat and on the manager's shallow copies.
- ``<run>.<NAME>`` (text, a template when the code formats it): a prompt your ``run`` function
  writes into an agent's system message each run (``agent.update_system_message(SYSTEM.format(...))``,
  an f-string, ``%``...), read from its syntax tree by `opto_core.kernel.code_prompts`. It is that
  agent's system-message parameter (the conversation builder credits it where its filled-in text
  went); the agent's own ``system_message`` is rewritten by every run, so it is no parameter then.

An agent without an ``llm_config`` (a pure tool executor) has no model parameters: it is listed in
``notes``, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from autogen import ConversableAgent, GroupChat, GroupChatManager

from opto_adapters.autogen.ag2.bindings import (
    SettingBinding,
    SystemMessageBinding,
    TemplateBinding,
    ToolCodeBinding,
    ToolDescriptionBinding,
    _placeholder_check,
    function_map,
    registered_function,
)
from opto_core.engine.target import BoundTarget
from opto_core.kernel.binding import Binding, BoundParameters, select
from opto_core.kernel.code import (
    keeps_signature_bindings,
)
from opto_core.kernel.code_prompts import CodePrompt, Sink, prompts_in_function
from opto_core.kernel.conversation import (
    ROLE_PROMPT,
    ROLE_SETTING,
    ROLE_SYSTEM,
    ROLE_TOOL_CODE,
    ROLE_TOOL_DESCRIPTION,
)
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.ranges import range_for
from opto_core.kernel.templates import Template

#: Numeric settings an llm_config may set: kind, lower, upper (OpenAI's documented ranges), used where
#: the core has no range rule (`opto_core.kernel.ranges.range_for` bounds temperature, top_p, max_tokens).
NUMERIC_SETTINGS: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("float", 0.0, 2.0),
    "top_p": ("float", 0.0, 1.0),
    "presence_penalty": ("float", -2.0, 2.0),
    "frequency_penalty": ("float", -2.0, 2.0),
    "max_tokens": ("int", 1, None),
    "max_completion_tokens": ("int", 1, None),
}
#: GroupChat attributes holding the "auto" speaker-selection prompts, and the placeholders AG2 fills in.
SELECTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "select_speaker_message_template": ("roles", "agentlist"),
    "select_speaker_prompt_template": ("agentlist",),
}


# ----- the private AG2 state, isolated -----------------------------------------------------------


# ----- bindings ------------------------------------------------------------------------------------


# ----- discovery ---------------------------------------------------------------------------------


@dataclass
class AG2Parameters:
    """The parameters found on some AG2 agents: bindings, graph roles and what was skipped, and why."""

    bound: BoundParameters
    roles: dict[str, dict[str, Parameter]]  # agent name -> conversation-builder role -> Parameter
    owners: dict[str, str]  # parameter name -> the agent whose requests show it
    notes: list[str]
    agents: list[ConversableAgent]
    manager: GroupChatManager | None = None

    def request_checks(self, names: Iterable[str]) -> dict[str, tuple[str, Any]]:
        """For written parameters: (agent, request -> bool) that is true when a request shows the value."""
        checks: dict[str, tuple[str, Any]] = {}
        for name in names:
            parameter = self.bound[name]
            role = parameter.meta.get("role", "")
            owner = self.owners.get(name)
            if owner is None:
                continue
            value = parameter.value
            if role == ROLE_SYSTEM and parameter.template_model is not None:  # filled in by the run function
                written = Template.parse(value, parameter.template_model.style)
                checks[name] = (
                    owner,
                    lambda r, t=written: t is not None and t.match(r["messages"][0].get("content") or "") is not None,
                )
            elif role == ROLE_SYSTEM:
                checks[name] = (owner, lambda r, v=value: r["messages"][0].get("content") == v)
            elif role.startswith(ROLE_SETTING):
                setting = role[len(ROLE_SETTING) :]
                checks[name] = (owner, lambda r, k=setting, v=value: r.get(k) == v)
            elif role.startswith(ROLE_TOOL_DESCRIPTION):
                tool = role[len(ROLE_TOOL_DESCRIPTION) :]
                checks[name] = (
                    owner,
                    lambda r, t=tool, v=value: any(
                        s.get("function", {}).get("name") == t and s["function"].get("description") == v
                        for s in r.get("tools") or []
                    ),
                )
            elif role.startswith(ROLE_PROMPT) and "message" in role:
                checks[name] = (
                    owner,
                    lambda r, v=value: v.split("{")[0][:40] in (r["messages"][0].get("content") or ""),
                )
        return checks


def expand(objects: Any) -> tuple[list[ConversableAgent], list[GroupChat], list[GroupChatManager]]:
    """Agents, GroupChats and managers from an agent, a GroupChat, a manager, or a list of them."""
    items = list(objects) if isinstance(objects, (list, tuple, set)) else [objects]
    agents: list[ConversableAgent] = []
    chats: list[GroupChat] = []
    managers: list[GroupChatManager] = []
    for item in items:
        if isinstance(item, GroupChatManager):
            managers.append(item)
            if item.groupchat not in chats:
                chats.append(item.groupchat)
        elif isinstance(item, GroupChat):
            if item not in chats:
                chats.append(item)
        elif isinstance(item, ConversableAgent):
            agents.append(item)
        else:
            raise TypeError(
                f"expected AG2 agents (ConversableAgent), a GroupChat or a GroupChatManager, got {type(item).__name__}"
            )
    for chat in chats:
        for agent in chat.agents:
            if isinstance(agent, ConversableAgent) and all(agent is not a for a in agents):
                agents.append(agent)
    for manager in managers:
        if all(manager is not a for a in agents):
            agents.append(manager)
    names = [a.name for a in agents]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"agent names must be unique to name their parameters; repeated: {repeated}")
    return agents, chats, managers


#: The AG2 calls of a run function that set an agent's system message.
SINKS = (
    Sink(
        "update_system_message",
        (0, "system_message"),
        role="system",
        receiver=lambda value: isinstance(value, ConversableAgent),
    ),
)


def run_prompts(
    run: Any, agents: list[ConversableAgent]
) -> tuple[list[tuple[ConversableAgent, CodePrompt]], list[str]]:
    """The prompts ``run`` writes into the system message of one of ``agents``, and notes on the others."""
    found: list[tuple[ConversableAgent, CodePrompt]] = []
    notes: list[str] = []
    for prompt in prompts_in_function(run, SINKS):
        agent = next((a for a in agents if a is prompt.receiver), None)
        if agent is None:
            notes.append(
                f"{prompt.name}: {getattr(run, '__name__', 'run')} writes it into the system message of "
                f"an agent that was not given ({getattr(prompt.receiver, 'name', '?')}); pass that agent "
                "to optimize it"
            )
            continue
        found.append((agent, prompt))
    return found, notes


def _model_of(agent: ConversableAgent) -> str | None:
    """The model an agent's llm_config names (its first config entry's, else the top level's)."""
    config = agent.llm_config or {}
    entries = config.get("config_list") or [{}]
    model = (entries[0] if isinstance(entries[0], dict) else {}).get("model") or config.get("model")
    return str(model) if model else None


def discover(
    objects: Any, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, *, run: Any = None
) -> AG2Parameters:
    """Every parameter of the given AG2 objects, bound to where it lives (and the prompts ``run`` writes)."""
    agents, chats, managers = expand(objects)
    templates, template_notes = run_prompts(run, agents) if run is not None else ([], [])
    templated = {agent.name: prompt for agent, prompt in templates}
    run_label = getattr(run, "__name__", "run")
    entries: list[tuple[Parameter, Binding]] = []
    roles: dict[str, dict[str, Parameter]] = {}
    owners: dict[str, str] = {}
    notes: list[str] = list(template_notes)

    def add(agent: str, role: str, parameter: Parameter, binding: Binding, owner: str | None = None) -> None:
        parameter.meta["role"] = role
        entries.append((parameter, binding))
        roles.setdefault(agent, {})[role] = parameter
        owners[parameter.name] = owner or agent

    executors: dict[str, ConversableAgent] = {}
    for agent in agents:
        for tool in function_map(agent):
            executors.setdefault(tool, agent)
    for agent in agents:
        name = agent.name
        is_manager = isinstance(agent, GroupChatManager)
        if not agent.llm_config:
            if not is_manager:
                notes.append(
                    f"{name} has no llm_config: no model parameters (system message, settings, tool descriptions)"
                )
        else:
            prompt = templated.get(name)
            if prompt is not None:
                add(
                    name,
                    ROLE_SYSTEM,
                    Parameter(
                        f"{run_label}.{prompt.name}",
                        "text",
                        prompt.value,
                        description=f"system message of the AG2 agent {name}: " + prompt.describe(run_label),
                        template=prompt.template,
                    ),
                    prompt.binding,
                )
                notes.append(
                    f"{name}.system_message is written by {run_label}() from {prompt.name} on every run: "
                    f"{run_label}.{prompt.name} is the parameter"
                )
            elif not is_manager:  # a manager's own system message reaches no model
                add(
                    name,
                    ROLE_SYSTEM,
                    Parameter(
                        f"{name}.system_message",
                        "text",
                        agent.system_message,
                        description=f"system message of the AG2 agent {name}",
                    ),
                    SystemMessageBinding(agent),
                )
            for key, (kind, lower, upper) in NUMERIC_SETTINGS.items():
                binding = SettingBinding(agent, key)
                value = binding.read()
                if value is None:
                    continue
                what = "speaker selection" if is_manager else name
                rule = range_for(key, value, model=_model_of(agent))
                low, high, why = (rule.lower, rule.upper, f"; range: {rule.why}") if rule else (lower, upper, "")
                add(
                    name,
                    ROLE_SETTING + key,
                    Parameter(
                        f"{name}.{key}",
                        kind,
                        value,
                        lower=low,
                        upper=high,
                        description=f"{key} of the model calls of {what}{why}",
                    ),
                    binding,
                )
            for tool in agent.llm_config.get("tools") or []:
                tool_name = tool.get("function", {}).get("name", "")
                binding = ToolDescriptionBinding(agent, tool_name)
                add(
                    name,
                    ROLE_TOOL_DESCRIPTION + tool_name,
                    Parameter(
                        f"{name}.tools.{tool_name}.description",
                        "text",
                        binding.read(),
                        description=f"description of the tool {tool_name} advertised to {name}'s model",
                    ),
                    binding,
                )
        for tool_name in function_map(agent):
            if executors.get(tool_name) is not agent:
                continue
            binding = ToolCodeBinding(agent, tool_name)
            try:
                source = binding.read()
            except OSError as exc:
                notes.append(f"{name}.tools.{tool_name}: code not optimizable ({exc})")
                continue
            add(
                name,
                ROLE_TOOL_CODE + tool_name,
                Parameter(
                    f"{name}.tools.{tool_name}.code",
                    "code",
                    source,
                    checks=[keeps_signature_bindings(registered_function(agent, tool_name))],
                    origin=registered_function(agent, tool_name),
                    description=f"the tool {tool_name} run by {name}; keep its signature (AG2 advertises "
                    "its schema from it)",
                ),
                binding,
            )
    for chat in chats:
        chat_managers = [m for m in managers if m.groupchat is chat]
        owner = chat_managers[0].name if chat_managers else "groupchat"
        if chat.speaker_selection_method != "auto":
            notes.append(
                f"{owner}: speaker selection {chat.speaker_selection_method!r} calls no model: no selection prompts"
            )
            continue
        if not chat_managers:
            notes.append(
                "a GroupChat given without its GroupChatManager: the manager's copies of the selection "
                "prompts are unknown; pass the manager to optimize them"
            )
            continue
        for attribute, allowed in SELECTION_TEMPLATES.items():
            value = getattr(chat, attribute, None)
            if not value:
                continue
            add(
                owner,
                ROLE_PROMPT + attribute,
                Parameter(
                    f"{owner}.{attribute}",
                    "text",
                    value,
                    description=f"GroupChat speaker-selection prompt ({attribute}); AG2 fills in "
                    + ", ".join("{" + a + "}" for a in allowed),
                    checks=[_placeholder_check(allowed, value, attribute)],
                ),
                TemplateBinding(chat, attribute, chat_managers),
            )
    bound = BoundParameters(entries, include=include, exclude=exclude)
    return AG2Parameters(bound, roles, owners, notes, agents, managers[0] if managers else None)


def bound_parameters(
    agents_or_groupchat: Any,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    **options: Any,
) -> BoundParameters:
    """Every parameter of AG2 agents, a GroupChat or a GroupChatManager (or a list of them), bound to
    where it lives: a `BoundParameters`. ``include``/``exclude``: names or globs (left out: frozen).

    Names: ``<agent>.system_message``, ``<agent>.temperature`` (and other numeric settings the
    llm_config sets), ``<caller>.tools.<tool>.description``, ``<executor>.tools.<tool>.code``,
    ``<manager>.select_speaker_message_template``, ``<manager>.select_speaker_prompt_template``.
    ``options`` go to `discover`. An `AG2Target` gives its own (``include``/``exclude`` then freeze some).
    """
    if isinstance(agents_or_groupchat, BoundTarget):
        bound = agents_or_groupchat.bound
        if include is not None or exclude is not None:
            bound.freeze_except(select(bound.names(), include, exclude))
        return bound
    return discover(agents_or_groupchat, include, exclude, **options).bound


def parameters_of(
    agents_or_groupchat: Any, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **options: Any
) -> list[Parameter]:
    """The parameters ``include``/``exclude`` select (see `bound_parameters`), with their current values."""
    bound = bound_parameters(agents_or_groupchat, **options)
    chosen = select(bound.names(), include, exclude)
    return [p for p in bound.parameters() if p.name in chosen]
