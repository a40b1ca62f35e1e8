"""Parameters without code: prompts and settings found in model traffic, deployed by rewriting requests.

A program we have no adapter for still sends its prompts and settings over the wire, so the gateway
can own them there. Three kinds of rules, each holding one `Parameter` (kept in a `BoundParameters`
without bindings: the value lives in the `Parameter`, read on every request):

- `PromptRule`: a message the program sends, matched by its **original** text (declared with
  ``prompt(name, text)``) or its original **template** (``prompt(name, template="... {x} ...")``).
  A request message that matches is replaced by the **current** value: for a template, the match's
  bound placeholder values rendered into the current template (`opto_core.kernel.templates`). Roles:
  ``system`` (system and developer messages, and the Responses API's ``instructions``), ``user``,
  ``assistant``. A system prompt also names the **agent** of the calls it opens (for the graph, and
  for settings scoped to one agent).
- `SettingRule`: a request setting (``temperature``, ``top_p``, ``max_tokens``, ``model`` from a
  list you give, ...) set on every request (or on one agent's requests).
- `ToolDescriptionRule`: the description of a tool offered to the model.

Values go to production the same way: `TrafficParameters.save_values` writes ``opto-values/1`` with
the rules themselves in ``meta["gateway"]``, so ``opto gateway --values best.json`` rebuilds them and
rewrites a program it has never seen. A rule that matches no request in a whole run (the program's
prompt changed since the values were saved) is named in one warning; its requests pass untouched.

`propose` finds prompts automatically: system prompts (and instructions) that repeat across recorded
runs, each becoming a text parameter named after its agent (``agent_1.system``, ...).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from opto_core.gateway.wire import SYSTEM_ROLES, WireRequest, set_text, set_tool_description, setting_key
from opto_core.kernel.binding import BoundParameters
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.templates import Template

_log = logging.getLogger("opto.gateway")

#: Roles a prompt rule may cover.
PROMPT_ROLES = ("system", "user", "assistant")
#: Settings a gateway can own, with their bounds (``model`` takes a list of choices instead).
SETTING_BOUNDS: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("float", 0.0, 2.0),
    "top_p": ("float", 0.0, 1.0),
    "max_tokens": ("int", 1, None),
    "presence_penalty": ("float", -2.0, 2.0),
    "frequency_penalty": ("float", -2.0, 2.0),
    "seed": ("int", None, None),
}
#: What the OpenAI API uses when a request leaves a setting out (a setting the program never sends
#: starts at this value, so owning it changes nothing until the optimizer does).
API_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
#: The key of the gateway's rules in a values file's ``meta``.
META_KEY = "gateway"


def _role_of(wire_role: str) -> str:
    return "system" if wire_role in SYSTEM_ROLES else wire_role


@dataclass
class PromptRule:
    """A message template the gateway owns: matched by its original, replaced by the current value."""

    parameter: Parameter
    role: str
    original: str
    agent: str
    template: bool = False
    style: str | None = None
    matched: int = 0

    @property
    def name(self) -> str:
        return self.parameter.name

    def compiled(self) -> Template:
        """The original as a `Template` (templates only): the parameter's own template model."""
        original = self.parameter.template_model
        assert original is not None, f"prompt {self.name!r} is no template"
        return original

    def current(self) -> Template:
        """The current value as a `Template` (templates only): what a rewritten message was rendered from.
        (The parameter's checks keep every value a template of the original's style and placeholders.)"""
        current = self.parameter.current_template()  # parsed once per value, in the original's style
        assert current is not None, f"prompt {self.name!r}: the value lost its placeholders"
        return current

    def rewrite(self, text: str) -> str | None:
        """The text this message becomes, or None when the message is not this prompt's."""
        current = self.parameter.value
        if not self.template:
            return current if text == self.original or text == current else None
        match = self.compiled().match(text)
        if match is None:
            return None
        return self.current().render(match)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": "prompt", "role": self.role, "original": self.original, "agent": self.agent}
        if self.template:
            spec.update(template=True, style=self.compiled().style)
        return spec


@dataclass
class SettingRule:
    """A request setting the gateway owns (on every request, or on one agent's requests)."""

    parameter: Parameter
    key: str
    agent: str | None = None

    @property
    def name(self) -> str:
        return self.parameter.name

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": "setting", "key": self.key, "agent": self.agent, "type": self.parameter.kind}
        for bound in ("lower", "upper", "choices"):
            if getattr(self.parameter, bound) is not None:
                spec[bound] = getattr(self.parameter, bound)
        return spec


@dataclass
class ToolDescriptionRule:
    """The description of one tool offered to the model."""

    parameter: Parameter
    tool: str
    original: str

    @property
    def name(self) -> str:
        return self.parameter.name

    def spec(self) -> dict[str, Any]:
        return {"kind": "tool_description", "tool": self.tool, "original": self.original}


@dataclass
class Rewrite:
    """What `TrafficParameters.rewrite` did to one request."""

    applied: list[str] = field(default_factory=list)  # rules that matched (their value is in the request)
    changed: bool = False  # whether the body differs from what the program sent
    agent: str | None = None
    positions: dict[str, list[int]] = field(default_factory=dict)  # prompt rule -> message positions
    replacements: list[tuple[Any, PromptRule, str]] = field(
        default_factory=list, repr=False
    )  # (message, rule, new text)


class TrafficParameters:
    """The prompts, settings and tool descriptions a gateway owns, as `Parameter` objects."""

    def __init__(self) -> None:
        self.bound = BoundParameters()
        self.prompts: list[PromptRule] = []
        self.settings: list[SettingRule] = []
        self.tools: list[ToolDescriptionRule] = []
        self._by_text: dict[tuple[str, str], PromptRule] = {}  # (role, original text) -> text rule

    # ----- declaring ---------------------------------------------------------------------------------
    def prompt(
        self,
        name: str,
        text: str | None = None,
        *,
        template: str | None = None,
        role: str = "system",
        style: str | None = None,
        agent: str | None = None,
        trainable: bool = True,
        description: str = "",
    ) -> Parameter:
        """Own a message the program sends: its exact ``text``, or every message matching ``template``.

        ``role`` is ``system`` (system/developer messages and Responses ``instructions``), ``user`` or
        ``assistant``. ``agent`` names the calls a system prompt opens (default: ``name`` without a
        trailing ``.system``). A template is a template `Parameter` (``template=style or True``): its
        new values must keep its placeholders (`opto_core.kernel.templates.check_placeholders`).
        """
        if (text is None) == (template is None):
            raise ValueError(f"prompt {name!r}: give exactly one of text=... (matched exactly) or template=...")
        if role not in PROMPT_ROLES:
            raise ValueError(f"prompt {name!r}: role must be one of {PROMPT_ROLES}, got {role!r}")
        original = text if text is not None else template
        assert original is not None
        what = "template" if template is not None else "text"
        parameter = Parameter(
            name,
            "text",
            original,
            trainable=trainable,
            template=(style or True) if template is not None else False,
            description=description or f"the {role} message {what} sent by the program",
            meta={"gateway": role},
        )  # a template that does not parse fails here
        self.bound.add(parameter)
        rule = PromptRule(parameter, role, original, agent or _agent_name(name), template is not None, style)
        if template is None:
            self._by_text[(role, original)] = rule
        self.prompts.append(rule)
        return parameter

    def setting(
        self,
        key: str,
        value: Any = None,
        *,
        name: str | None = None,
        agent: str | None = None,
        choices: list[Any] | None = None,
        lower: float | None = None,
        upper: float | None = None,
        trainable: bool = True,
    ) -> Parameter:
        """Own a request setting: ``temperature``, ``top_p``, ``max_tokens``, ``presence_penalty``,
        ``frequency_penalty``, ``seed``, or ``model`` (with ``choices``, the models it may pick).

        ``value`` is where it starts: give what the program sends (``propose`` fills it from recorded
        traffic), else the API's default is used (temperature and top_p 1.0). ``agent`` limits it to
        the requests of one agent (named by a system prompt rule).
        """
        name = name or (f"{agent}.{key}" if agent else key)
        if key == "model":
            if not choices:
                raise ValueError("setting('model') needs choices=[...]: the models the optimizer may pick from")
            value = value if value is not None else choices[0]
            choices = list(choices) if value in choices else [value, *choices]
            parameter = Parameter(
                name,
                "choice",
                value,
                choices=choices,
                trainable=trainable,
                description="the model the requests go to",
                meta={"gateway": "setting"},
            )
        else:
            kind, low, high = SETTING_BOUNDS.get(key, ("float", None, None))
            if value is None:
                value = API_DEFAULTS.get(key)
                if value is None:
                    raise ValueError(f"setting({key!r}) needs a value (the program's own), e.g. setting({key!r}, 512)")
            parameter = Parameter(
                name,
                kind,
                value,
                lower=low if lower is None else lower,
                upper=high if upper is None else upper,
                trainable=trainable,
                description=f"the request setting {key}",
                meta={"gateway": "setting"},
            )
        self.bound.add(parameter)
        self.settings.append(SettingRule(parameter, key, agent))
        return parameter

    def tool_description(self, tool: str, text: str, *, name: str | None = None, trainable: bool = True) -> Parameter:
        """Own the description of tool ``tool`` (``text``: its description as the program sends it)."""
        parameter = Parameter(
            name or f"tool.{tool}.description",
            "text",
            text,
            trainable=trainable,
            description=f"the description of the tool {tool} the model reads",
            meta={"gateway": "tool_description"},
        )
        self.bound.add(parameter)
        self.tools.append(ToolDescriptionRule(parameter, tool, text))
        return parameter

    def parameters(self) -> list[Parameter]:
        return self.bound.parameters()

    def __len__(self) -> int:
        return len(self.bound)

    # ----- rewriting -----------------------------------------------------------------------------------
    def rewrite(self, api: str, body: dict[str, Any], request: WireRequest) -> Rewrite:
        """Apply the current values to one request body, in place (and count each prompt rule's matches)."""
        result = self.match(api, body, request)
        for message, rule, new in result.replacements:
            rule.matched += 1
            if new != message.content:
                set_text(body, message, new)
                result.changed = True
        for setting in self.settings:
            if setting.name in result.applied:
                key = setting_key(api, body, setting.key)
                if body.get(key) != setting.parameter.value:
                    body[key] = setting.parameter.value
                    result.changed = True
        for tool in self.tools:
            if tool.name in result.applied and set_tool_description(body, api, tool.tool, tool.parameter.value):
                result.changed = True
        return result

    def match(self, api: str, body: dict[str, Any], request: WireRequest) -> Rewrite:
        """Which rules a request matches and what its messages would become; changes nothing."""
        result = Rewrite()
        if not (self.prompts or self.settings or self.tools):
            return result
        for position, message in enumerate(request.messages):
            if not message.rewritable or message.role == "tool" or message.tool_calls:
                continue
            role = _role_of(message.role)
            rule = self._by_text.get((role, message.content))
            new = rule.rewrite(message.content) if rule is not None else None
            if new is None:
                rule, new = self._match_any(role, message.content)
            if rule is None or new is None:
                continue
            if rule.name not in result.positions:
                result.applied.append(rule.name)
            result.positions.setdefault(rule.name, []).append(position)
            result.replacements.append((message, rule, new))
            if role == "system" and result.agent is None:
                result.agent = rule.agent
        for setting in self.settings:
            if setting.agent is None or setting.agent == result.agent:
                result.applied.append(setting.name)
        offered = {tool["name"] for tool in request.tools}
        for described in self.tools:
            if described.tool in offered:
                result.applied.append(described.name)
        return result

    def rules(self) -> list[PromptRule | SettingRule | ToolDescriptionRule]:
        """Every rule: prompts, then settings, then tool descriptions."""
        return [*self.prompts, *self.settings, *self.tools]

    def rule(self, name: str) -> PromptRule | SettingRule | ToolDescriptionRule:
        for rule in self.rules():
            if rule.name == name:
                return rule
        raise KeyError(f"no gateway rule {name!r}; rules: {[r.name for r in self.rules()]}")

    def _match_any(self, role: str, text: str) -> tuple[PromptRule | None, str | None]:
        for rule in self.prompts:
            if rule.role != role:
                continue
            new = rule.rewrite(text)
            if new is not None:
                return rule, new
        return None, None

    def unmatched_after(self, run: Any) -> list[tuple[str, str]]:
        """(rule name, warning) for each prompt rule that has matched no request yet, after a run with
        requests closed: the program no longer sends the rule's original (it changed since)."""
        parsed = [e for e in run.exchanges if e.request is not None]
        if not parsed:
            return []
        return [
            (
                rule.name,
                f"opto gateway: the {rule.role} prompt {rule.name!r} matched no request of run "
                f"{run.id} ({len(parsed)} requests): the program no longer sends "
                f"{_snippet(rule.original)!r}; its requests were forwarded untouched. Record the "
                f"program again and re-declare the prompt, or drop it from the values file.",
            )
            for rule in self.prompts
            if rule.matched == 0
        ]

    # ----- finding parameters in traffic ---------------------------------------------------------------
    def propose(
        self,
        runs: Iterable[Any],
        *,
        min_runs: int = 2,
        settings: Iterable[str] = (),
        tools: Iterable[str] = (),
        models: list[str] | None = None,
        user_templates: bool = True,
        inputs: Mapping[str, Any] | None = None,
    ) -> list[Parameter]:
        """Parameters found in recorded runs, added to these and returned.

        - every system prompt (or ``instructions``) that appears in at least ``min_runs`` runs (all of
          them when fewer were recorded) and no rule owns yet: a text parameter ``agent_<k>.system``;
        - with ``user_templates``, user messages the program composed from values it had (an earlier
          answer or tool result of the run, a field of the run's example in ``inputs``: run id ->
          example), in ``min_runs`` runs: a template parameter ``agent_<k>.user_<j>`` such as
          ``Summarize this draft:\n{agent_1_answer}`` or ``Topic: {topic}``, whose constant text the
          optimizer may rewrite (keeping the placeholders);
        - each setting named in ``settings`` (and ``model`` when ``models`` lists the choices),
          starting at the value the program sends most often. When the calls belong to several agents
          (several system prompts), each agent gets its own (``agent_1.temperature``); an agent that
          never sends the setting is left alone unless the API has a default for it;
        - the descriptions of the ``tools`` named (``["*"]``: every tool offered).
        """
        runs = list(runs)
        needed = max(1, min(min_runs, len(runs)))
        requests = [(run, exchange, exchange.parsed()) for run in runs for exchange in run.exchanges]
        requests = [(run, exchange, request) for run, exchange, request in requests if request is not None]
        added = self._propose_prompts(requests, needed)
        if user_templates:
            added += self._propose_user_templates(requests, needed, inputs or {})
        keys = list(settings) + (["model"] if models else [])
        observed: dict[str, dict[str | None, Counter[Any]]] = {key: {} for key in keys}
        descriptions: dict[str, str] = {}
        for _, exchange, request in requests:
            agent = self.match(request.api, exchange.request, request).agent
            for key in keys:
                counts = observed[key].setdefault(agent, Counter())
                value = request.model if key == "model" else _setting_of(request, key)
                if value is not None:
                    counts[_hashable(value)] += 1
            for tool in request.tools:
                descriptions.setdefault(tool["name"], tool["description"])
        owned = {(rule.key, rule.agent) for rule in self.settings}
        for key in keys:
            by_agent = observed[key]
            scoped = len(by_agent) > 1
            for agent, counts in by_agent.items():
                if scoped and agent is None:
                    continue  # calls no system prompt rule names: not owned (their program's value stands)
                target = agent if scoped else None
                if (key, target) in owned:
                    continue
                value = counts.most_common(1)[0][0] if counts else None
                if value is None and key not in API_DEFAULTS and key != "model":
                    continue  # never sent, and no API default to start from
                added.append(
                    self.setting(
                        key, value, agent=target, choices=list(models or []) or None if key == "model" else None
                    )
                )
        owned_tools = {rule.tool for rule in self.tools}
        names = list(descriptions) if list(tools) == ["*"] else list(tools)
        for tool in names:
            if tool in owned_tools:
                continue
            if tool not in descriptions:
                raise ValueError(f"no recorded request offers the tool {tool!r}; offered: {sorted(descriptions)}")
            added.append(self.tool_description(tool, descriptions[tool]))
        return added

    def _propose_prompts(self, requests: list[tuple[Any, Any, WireRequest]], needed: int) -> list[Parameter]:
        seen_in: dict[str, set[str]] = {}
        for run, _, request in requests:
            for message in request.messages:
                if message.is_system and message.content.strip():
                    seen_in.setdefault(message.content, set()).add(run.id)
        owned = {rule.original for rule in self.prompts} | {rule.parameter.value for rule in self.prompts}
        added = []
        for text, run_ids in seen_in.items():  # in order of first appearance
            if len(run_ids) >= needed and text not in owned:
                agent = self._next_agent()
                added.append(self.prompt(f"{agent}.system", text, agent=agent))
        return added

    def _propose_user_templates(
        self, requests: list[tuple[Any, Any, WireRequest]], needed: int, inputs: Mapping[str, Any]
    ) -> list[Parameter]:
        """User messages the program composed from known values: an earlier answer of the run (or a tool
        result), or a field of the run's example (``inputs``: run id -> example). The rest of such a
        message is constant text the program wrote, a prompt: ``Summarize this draft:\\n{agent_1_answer}``.
        A template found in ``needed`` runs becomes a parameter."""
        found: dict[tuple[str, str], set[str]] = {}  # (agent, template) -> run ids
        order: list[tuple[str, str]] = []
        known: dict[str, list[tuple[str, str]]] = {}  # run id -> [(placeholder, text)]
        for run, exchange, request in requests:
            values = known.setdefault(run.id, _example_values(inputs.get(run.id)))
            plan = self.match(request.api, exchange.request, request)
            taken = {p for positions in plan.positions.values() for p in positions}
            for position, message in enumerate(request.messages):
                if message.role == "tool" and len(message.content.strip()) >= MIN_VALUE:
                    _remember(values, "tool_result", message.content)
                if message.role != "user" or not message.rewritable or position in taken or plan.agent is None:
                    continue
                template = _template_of(message.content, values)
                if template is not None:
                    key = (plan.agent, template)
                    if key not in found:
                        order.append(key)
                    found.setdefault(key, set()).add(run.id)
            answer = exchange.wire_answer()
            if answer is not None and answer.text and len(answer.text.strip()) >= MIN_VALUE:
                _remember(values, f"{plan.agent or 'model'}_answer", answer.text)
        added = []
        owned = {(rule.role, rule.original) for rule in self.prompts}
        for agent, template in order:
            if len(found[(agent, template)]) >= needed and ("user", template) not in owned:
                k = 1 + sum(1 for rule in self.prompts if rule.agent == agent and rule.role == "user")
                added.append(
                    self.prompt(f"{agent}.user_{k}", template=template, role="user", style="format", agent=agent)
                )
                owned.add(("user", template))
        return added

    def _next_agent(self) -> str:
        taken = {rule.agent for rule in self.prompts}
        k = 1
        while f"agent_{k}" in taken:
            k += 1
        return f"agent_{k}"

    # ----- values files --------------------------------------------------------------------------------
    def specs(self) -> dict[str, dict[str, Any]]:
        """Every rule by parameter name, as stored in a values file's ``meta["gateway"]``."""
        return {rule.name: rule.spec() for rule in self.rules()}

    def save_values(self, path: str, values: Mapping[str, Any] | None = None, **meta: Any) -> Any:
        """Write ``values`` (default: the current ones) as ``opto-values/1``, with the rules in ``meta``."""
        from opto_core.kernel.values import save_values

        chosen = dict(values) if values is not None else self.bound.values(trainable_only=False)
        return save_values(path, chosen, {"framework": "gateway", META_KEY: self.specs(), **meta})

    def load_values(self, values_or_path: Any) -> dict[str, Any]:
        """Load saved values; rules stored in the file (``meta["gateway"]``) that are not declared here are
        rebuilt first, so a gateway serves a values file with nothing declared. Returns what was applied."""
        from opto_core.kernel.values import resolve

        saved = resolve(values_or_path)
        for name, spec in (saved.meta.get(META_KEY) or {}).items():
            if name not in self.bound and name in saved:
                self.add_spec(name, spec)
        return self.bound.apply(dict(saved), allow_frozen=True)

    def add_spec(self, name: str, spec: Mapping[str, Any]) -> Parameter:
        """Rebuild one rule from its stored spec (see `specs`)."""
        kind = spec.get("kind")
        if kind == "prompt":
            original = str(spec["original"])
            if spec.get("template"):
                return self.prompt(
                    name,
                    template=original,
                    role=spec.get("role", "system"),
                    style=spec.get("style"),
                    agent=spec.get("agent"),
                )
            return self.prompt(name, original, role=spec.get("role", "system"), agent=spec.get("agent"))
        if kind == "setting":
            return self.setting(
                spec["key"],
                _initial(spec),
                name=name,
                agent=spec.get("agent"),
                choices=spec.get("choices"),
                lower=spec.get("lower"),
                upper=spec.get("upper"),
            )
        if kind == "tool_description":
            return self.tool_description(spec["tool"], str(spec["original"]), name=name)
        raise ValueError(f"values file: parameter {name!r} has an unknown gateway rule {spec!r}")


#: A proposed user template needs this many constant characters besides its placeholders, and a value
#: this many characters to be looked for (shorter ones coincide too often).
MIN_SKELETON = 8
MIN_VALUE = 4


def _example_values(example: Any) -> list[tuple[str, str]]:
    """(placeholder, text) of an example's text fields (a plain string example is ``input``)."""
    if isinstance(example, str):
        return [("input", example)] if len(example.strip()) >= MIN_VALUE else []
    if isinstance(example, Mapping):
        return [
            (str(k), str(v))
            for k, v in example.items()
            if isinstance(v, (str, int, float))
            and not isinstance(v, bool)
            and str(k).isidentifier()
            and len(str(v).strip()) >= MIN_VALUE
        ]
    return []


def _remember(values: list[tuple[str, str]], name: str, text: str) -> None:
    if any(known == text for _, known in values):
        return
    taken = {placeholder for placeholder, _ in values}
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name}_{k}", k + 1
    values.append((unique, text))


def _template_of(text: str, values: list[tuple[str, str]]) -> str | None:
    """``text`` with every known value in it replaced by its ``{placeholder}`` (format style, other braces
    doubled), or None when no value is in it or too little constant text is left."""
    spans: list[tuple[int, int, str]] = []
    for name, value in sorted(values, key=lambda item: -len(item[1])):
        start = text.find(value)
        while start >= 0:
            end = start + len(value)
            if all(end <= a or start >= b for a, b, _ in spans):
                spans.append((start, end, name))
            start = text.find(value, end)
    if not spans:
        return None
    spans.sort()
    parts, position = [], 0
    for start, end, name in spans:
        parts.append(text[position:start].replace("{", "{{").replace("}", "}}"))
        parts.append("{" + name + "}")
        position = end
    parts.append(text[position:].replace("{", "{{").replace("}", "}}"))
    constant = len(text) - sum(end - start for start, end, _ in spans)
    return "".join(parts) if constant >= MIN_SKELETON else None


def _setting_of(request: WireRequest, key: str) -> Any:
    """The value a request sends for a setting (``max_tokens`` under any of its wire names)."""
    if key == "max_tokens":
        for wire in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if request.settings.get(wire) is not None:
                return request.settings[wire]
        return None
    return request.settings.get(key)


def _initial(spec: Mapping[str, Any]) -> Any:
    """A setting's starting value when rebuilt from a spec (the saved value replaces it right after)."""
    if spec.get("choices"):
        return spec["choices"][0]
    if spec.get("key") in API_DEFAULTS:
        return API_DEFAULTS[spec["key"]]
    lower = spec.get("lower")
    return lower if lower is not None else (1 if spec.get("type") == "int" else 0.0)


def _agent_name(name: str) -> str:
    for suffix in (".system", ".instructions", ".prompt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _hashable(value: Any) -> Any:
    return value if not isinstance(value, (dict, list)) else str(value)


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
