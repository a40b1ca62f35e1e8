"""The trainable parts of a LangChain chain or LangGraph graph, as OPTO parameters.

`parameters_of(runnable)` walks the object (sequence steps, parallel branches, bindings,
fallbacks, LangGraph nodes, and the models, prompts and tools that node functions and lambdas
close over) and returns one `Parameter` per trainable value:

- each message template of a ``ChatPromptTemplate`` and each ``PromptTemplate`` (``text``);
- chat model settings that are set: ``temperature``, ``top_p``, ``max_tokens``, penalties
  (``float``/``int`` with bounds);
- each tool's Python function (``code``) and description (``text``);
- prompts kept in code (``text``): the system prompt of a ``create_agent`` or
  ``create_react_agent`` agent, what a ``@dynamic_prompt`` middleware returns, and the prompts a
  node function, lambda, tool or helper builds: a module global or closure variable, formatted or
  not, an f-string, ``%``, ``+`` of constants, a template built inside the function
  (`prompts_in_code`, read by `opto_core.kernel.code_prompts`). A prompt with placeholders is a
  template: a new value must keep exactly its placeholders;
- a vector-store retriever's ``search_kwargs``: ``k`` (and ``fetch_k``, ``score_threshold``
  where set) as ``int``/``float``;
- the chat model's name as a ``choice``, when you name the alternatives (``model_choices``).

Every object found is tagged through its own ``metadata["opto_param_id"]`` (run metadata that
LangChain does not pass on to child runs), so the callback handler links each run to the
parameters it used. A parameter's binding writes a value into the live object and refreshes
what LangChain caches: template ``input_variables``, the cached ``_serialized``, a tool's
``args_schema``, and the tool schemas that ``bind_tools`` copied into model bindings.
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from langchain_core.language_models import BaseLanguageModel
from langchain_core.prompts import (
    BasePromptTemplate,
    ChatPromptTemplate,
    PromptTemplate,
)
from langchain_core.prompts.string import get_template_variables
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from langchain_core.vectorstores import VectorStoreRetriever

from opto_adapters.langchain._compat import dynamic_prompt_function
from opto_adapters.langchain.bindings import (
    CodeBinding,
    DescriptionBinding,
    FieldBinding,
    SearchKwargBinding,
    TemplateBinding,
    ToolModels,
    schema_for,
    tool_entry_name,
)
from opto_adapters.langchain.prompts_in_code import agent_prompt, code_prompts, react_prompt
from opto_core.engine.target import BoundTarget
from opto_core.kernel.binding import Binding, BoundParameters, UnknownParameters, select
from opto_core.kernel.code import (
    SourceUnavailable,
    function_source,
    keeps_signature_bindings,
)
from opto_core.kernel.code_prompts import CodePrompt, LiteralBinding
from opto_core.kernel.parameters import InvalidValue, Parameter
from opto_core.kernel.ranges import range_for

#: The framework's distribution name, in graphs and values files (files from before say "langchain").
FRAMEWORK = "langchain-core"

TAG_KEY = "opto_param_id"

#: Model settings that become parameters when the model has them set: kind, and bounds for the settings
#: the core has no range rule for (`opto_core.kernel.ranges.range_for` bounds the others).
MODEL_SETTINGS: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("float", None, None),
    "top_p": ("float", None, None),
    "max_tokens": ("int", None, None),
    "presence_penalty": ("float", -2.0, 2.0),
    "frequency_penalty": ("float", -2.0, 2.0),
}
_SETTING_TEXT = {
    "temperature": "sampling temperature (0 = deterministic, higher = more varied)",
    "top_p": "nucleus sampling mass (1 = off)",
    "max_tokens": "the most tokens the model may generate",
    "presence_penalty": "penalty on tokens already present",
    "frequency_penalty": "penalty on frequent tokens",
}
_ROLES = {
    "SystemMessagePromptTemplate": "system",
    "HumanMessagePromptTemplate": "human",
    "AIMessagePromptTemplate": "ai",
}
_SKIP_ATTRS = {
    "callbacks",
    "callback_manager",
    "metadata",
    "tags",
    "client",
    "async_client",
    "root_client",
    "root_async_client",
    "http_client",
    "http_async_client",
    "checkpointer",
    "store",
    "cache",
    "rate_limiter",
    "config_specs",
    "lc_kwargs",
}
_WALK_LIMIT = 200  # items per container, so a huge dict in a closure cannot stall discovery


class NoParametersFound(ValueError):
    """Nothing trainable was found; the message lists what was inspected."""


# ----- groups: one tagged framework object and its parameters --------------------------------------
class Group:
    """One LangChain object (a prompt, a model or a tool) with its tag and its parameters.

    ``available`` (prompts only) are the variables the chain is known to provide: the template's
    own, plus every key the handler saw reach this prompt in a traced run.
    """

    def __init__(self, obj: Any, kind: str, tag: str, base: str) -> None:
        self.obj = obj
        self.kind = kind  # prompt | model | tool | retriever | variable (a prompt kept in code: linked by value)
        self.tag = tag
        self.base = base
        self.parameters: list[Parameter] = []
        self.args: dict[str, str] = {}  # parameter name -> argument label on the op node
        self.available: set[str] = set()
        self.tool_names: set[str] = set()
        self.choices: dict[tuple[Any, ...], Parameter] = {}  # a model's name as a choice, by its alternatives

    @property
    def run_types(self) -> tuple[str, ...]:
        return {
            "prompt": ("prompt",),
            "model": ("chat_model", "llm"),
            "tool": ("tool",),
            "retriever": ("retriever",),
            "variable": (),
        }[self.kind]


_GROUPS: weakref.WeakValueDictionary[str, Group] = weakref.WeakValueDictionary()
_BY_OBJECT: weakref.WeakValueDictionary[Any, Group] = weakref.WeakValueDictionary()  # id(obj) or a variable's home
_LOCK = threading.RLock()
_COUNTER = itertools.count(1)


def group_of(tag: str) -> Group | None:
    """The live group for a tag found in run metadata, if any parameters for it still exist."""
    return _GROUPS.get(tag)


def live_groups() -> list[Group]:
    """Every group whose parameters still exist (for handlers that link whatever they meet)."""
    with _LOCK:
        groups = list(_BY_OBJECT.values())
    return list({id(g): g for g in groups}.values())


def binding_of(parameter: Parameter) -> Binding | None:
    return parameter.meta.get("langchain_binding")


def group_of_parameter(parameter: Parameter) -> Group | None:
    return parameter.meta.get("langchain_group")


def _tag(obj: Any, base: str) -> str:
    """Put the object's tag in its own metadata (merged: models carry ``lc_versions`` there)."""
    existing = (getattr(obj, "metadata", None) or {}).get(TAG_KEY)
    tag = existing if isinstance(existing, str) and existing else f"{base}@{next(_COUNTER)}"
    if existing != tag:
        obj.metadata = {**(getattr(obj, "metadata", None) or {}), TAG_KEY: tag}
    return tag


# ----- discovery -----------------------------------------------------------------------------------
@dataclass
class _Found:
    prompts: list[tuple[BasePromptTemplate, str]] = field(default_factory=list)
    models: list[tuple[BaseLanguageModel, str]] = field(default_factory=list)
    tools: list[tuple[BaseTool, str]] = field(default_factory=list)
    retrievers: list[tuple[VectorStoreRetriever, str]] = field(default_factory=list)
    bindings: list[RunnableBinding] = field(default_factory=list)
    functions: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    variables: list[tuple[str, CodePrompt]] = field(default_factory=list)  # (function label, prompt kept in code)
    inspected: list[str] = field(default_factory=list)


def _walkable(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return isinstance(obj, Runnable) or module.startswith(("langchain", "langgraph"))


def _walk(obj: Any, path: str, found: _Found, seen: set[int], depth: int) -> None:
    if depth > 16 or id(obj) in seen:
        return
    if obj is None or isinstance(obj, (str, bytes, int, float, bool, type)) or inspect.ismodule(obj):
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in itertools.islice(obj.items(), _WALK_LIMIT):
            _walk(value, f"{path}[{key!r}]", found, seen, depth + 1)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for index, value in enumerate(itertools.islice(obj, _WALK_LIMIT)):
            _walk(value, f"{path}[{index}]", found, seen, depth + 1)
        return
    if inspect.ismethod(obj):
        obj = obj.__func__
    if inspect.isfunction(obj):
        user = dynamic_prompt_function(obj)
        if user is not None and id(user) not in seen:  # @dynamic_prompt: your function returns the prompt
            seen.add(id(user))
            _prompts_kept_by(user, found, returns=True)
        _prompts_kept_by(obj, found)
        try:
            variables = inspect.getclosurevars(obj)
        except (TypeError, ValueError):
            return
        for name, value in itertools.chain(variables.nonlocals.items(), variables.globals.items()):
            _walk(value, f"{path}.<{name}>", found, seen, depth + 1)
        return
    if not _walkable(obj):
        return
    found.inspected.append(f"{path}: {type(obj).__name__}")
    if isinstance(obj, BaseTool):
        found.tools.append((obj, path))
        for function in (getattr(obj, "func", None), getattr(obj, "coroutine", None)):
            if inspect.isfunction(function):  # prompts it keeps in variables (its literals are its code)
                _prompts_kept_by(function, found, literals=False)
        return  # a tool's internals are its function, read as code
    if isinstance(obj, BaseLanguageModel):
        found.models.append((obj, path))
        return
    if isinstance(obj, BasePromptTemplate):
        found.prompts.append((obj, path))
        return
    if isinstance(obj, VectorStoreRetriever):
        found.retrievers.append((obj, path))
        return  # its vector store holds data, not settings
    if isinstance(obj, RunnableBinding) and obj.kwargs.get("tools"):
        found.bindings.append(obj)
    func = getattr(obj, "func", None)
    if isinstance(obj, Runnable) and inspect.isfunction(func) and func.__name__ != "<lambda>":
        try:
            found.functions.append((obj.get_name(), func))
        except Exception:  # a runnable whose name cannot be computed: no documentation for it
            pass
    attributes = getattr(obj, "__dict__", None)
    if attributes is None:
        slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ()) if isinstance(s, str)]
        attributes = {s: getattr(obj, s, None) for s in slots}
    for name, value in list(attributes.items()):
        if name.startswith("__") or name in _SKIP_ATTRS:
            continue
        _walk(value, f"{path}.{name}", found, seen, depth + 1)
    for name in ("func", "afunc"):  # RunnableLambda / LangGraph RunnableCallable functions
        value = getattr(obj, name, None)
        if value is not None and name not in attributes:
            _walk(value, f"{path}.{name}", found, seen, depth + 1)


def _prompts_kept_by(
    function: Callable[..., Any], found: _Found, *, returns: bool = False, literals: bool = True
) -> None:
    """Prompts ``function`` keeps in code: an agent's system prompt, or what your function builds."""
    for framework_prompt, label in ((agent_prompt(function), "model"), (react_prompt(function), "agent")):
        if framework_prompt is not None:
            found.variables.append((label, framework_prompt))
            return
    if (function.__module__ or "").startswith(("langchain", "langgraph", "opto_", "pydantic")):
        return
    label = "lambda" if function.__name__ == "<lambda>" else function.__name__
    for prompt in code_prompts(function, returns=returns):
        if literals or not isinstance(prompt.binding, LiteralBinding):
            found.variables.append((label, prompt))


def function_docs(runnable: Any, limit: int = 3000) -> dict[str, str]:
    """The source of each named function step (lambdas, LangGraph nodes), by run name, as documentation."""
    found = _Found()
    roots = runnable if isinstance(runnable, (list, tuple)) else [runnable]
    seen: set[int] = set()
    for root in roots:
        _walk(root, "root", found, seen, 0)
    docs: dict[str, str] = {}
    for name, func in found.functions:
        try:
            source = function_source(func)
        except (SourceUnavailable, TypeError):
            continue
        docs.setdefault(name, source if len(source) <= limit else source[:limit] + "\n# ... (cut)")
    return docs


def _unique(base: str, used: set[str]) -> str:
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _prompt_group(prompt: BasePromptTemplate, base: str) -> Group | None:
    group = Group(prompt, "prompt", "", base)
    if isinstance(prompt, ChatPromptTemplate):
        roles: dict[str, int] = {}
        entries = []
        for index, message in enumerate(prompt.messages):
            inner = getattr(message, "prompt", None)
            if not isinstance(inner, PromptTemplate):
                continue  # placeholders, fixed messages, image templates
            role = _ROLES.get(type(message).__name__) or str(getattr(message, "role", "message"))
            roles[role] = roles.get(role, 0) + 1
            entries.append((role, roles[role], index, message, inner))
        for role, k, _index, message, inner in entries:
            suffix = role if k == 1 else f"{role}_{k}"
            name = f"{base}.{suffix}"
            binding = TemplateBinding(inner, owner=prompt, message=message)
            _add_template(group, name, inner, binding, f"{role} message template of {base}", f"template.{suffix}")
        group.available.update(prompt.input_variables, prompt.partial_variables or {})
    elif isinstance(prompt, PromptTemplate):
        _add_template(group, f"{base}.template", prompt, TemplateBinding(prompt), f"prompt template {base}", "template")
        group.available.update(prompt.input_variables, prompt.partial_variables or {})
    return group if group.parameters else None


def _add_template(
    group: Group, name: str, template: PromptTemplate, binding: TemplateBinding, what: str, arg: str
) -> None:
    fmt = template.template_format
    required = set(get_template_variables(template.template, fmt))

    def check(value: str) -> str:
        try:
            variables = set(get_template_variables(value, fmt))
        except Exception as exc:
            raise ValueError(f"the template does not parse as a {fmt} template: {exc}") from None
        missing = required - variables
        if missing:
            raise ValueError(
                f"the template must keep the variable(s) {_braces(missing)}: they carry the "
                f"chain's input into the prompt"
            )
        unknown = variables - group.available
        if unknown:
            literal = " (write {{ and }} for literal braces)" if fmt == "f-string" else ""
            raise ValueError(
                f"unknown variable(s) {_braces(unknown)}: the chain provides only {_braces(group.available)}{literal}"
            )
        return value

    variables = f" (variables: {_braces(required)})" if required else ""
    parameter = Parameter(
        name,
        "text",
        template.template,
        description=f"{what}{variables}",
        checks=[check],
        meta={"langchain_binding": binding, "langchain_group": group},
    )
    group.parameters.append(parameter)
    group.args[name] = arg


def _braces(names: Iterable[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names)) or "(none)"


def _model_group(model: BaseLanguageModel, base: str) -> Group | None:
    group = Group(model, "model", "", base)
    label = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    fields = getattr(type(model), "model_fields", {})
    for setting, (kind, lower, upper) in MODEL_SETTINGS.items():
        if setting not in fields:
            continue
        value = getattr(model, setting, None)
        if value is None or isinstance(value, bool):
            continue
        rule = range_for(setting, value, model=str(label))
        why = ""
        if rule is not None:
            lower, upper, why = rule.lower, rule.upper, f" (range: {rule.why})"
        name = f"{base}.{setting}"
        parameter = Parameter(
            name,
            kind,
            value,
            lower=lower,
            upper=upper,
            description=f"{_SETTING_TEXT[setting]} of {label}{why}",
            meta={"langchain_binding": FieldBinding(model, setting), "langchain_group": group},
        )
        group.parameters.append(parameter)
        group.args[name] = setting
    return group  # kept even without settings: `model_choices` may add the model's name


def _tool_group(tool: BaseTool, base: str, bindings: Sequence[RunnableBinding]) -> Group | None:
    group = Group(tool, "tool", "", base)
    group.tool_names.add(tool.name)
    holding = [b for b in bindings if any(tool_entry_name(t) == tool.name for t in b.kwargs.get("tools") or [])]
    shared = ToolModels(tool, holding)
    func = getattr(tool, "func", None)
    if func is not None and inspect.isfunction(func) and func.__name__ != "<lambda>":
        try:
            source = function_source(func)
        except SourceUnavailable:
            source = None
        if source is not None:
            code = CodeBinding(shared, func, source, inferred_schema=_schema_inferred(tool, func))
            name = f"{base}.code"
            try:
                parameter = Parameter(
                    name,
                    "code",
                    source,
                    checks=[keeps_signature_bindings(func)],
                    origin=func,
                    description=f"Python source of tool {tool.name!r}; its signature is the tool's argument schema",
                    meta={"langchain_binding": code, "langchain_group": group, "tool": tool.name},
                )
            except InvalidValue:
                parameter = None  # source that is not one plain function (e.g. nested helpers around it)
            if parameter is not None:
                group.parameters.append(parameter)
                group.args[name] = "code"
    name = f"{base}.description"
    group.parameters.append(
        Parameter(
            name,
            "text",
            tool.description,
            description=f"description of tool {tool.name!r}, which the model reads to decide when and how to call it",
            meta={"langchain_binding": DescriptionBinding(shared), "langchain_group": group, "tool": tool.name},
        )
    )
    group.args[name] = "description"
    return group


def _schema_shape(schema: Any) -> dict[str, Any]:
    """What must not change in a tool's argument schema: names, types, which are required."""
    if schema is None:
        return {}
    try:
        data = schema.model_json_schema() if hasattr(schema, "model_json_schema") else dict(schema)
    except Exception:
        return {}
    properties = {
        name: {k: v for k, v in spec.items() if k not in ("title", "description", "default")}
        for name, spec in (data.get("properties") or {}).items()
    }
    return {"properties": properties, "required": sorted(data.get("required") or [])}


def _schema_inferred(tool: BaseTool, func: Callable[..., Any]) -> bool:
    """Whether the tool's args_schema was built from its function (so a code change must rebuild it)."""
    if tool.args_schema is None:
        return False
    try:
        built = schema_for(tool.name, func)
    except Exception:
        return False
    return _schema_shape(built) == _schema_shape(tool.args_schema)


def _code_prompt_group(function_name: str, prompt: CodePrompt, base: str) -> Group:
    group = Group(_prompt_home(prompt), "variable", "", base)
    if prompt.how.startswith("create_agent"):
        what = "the agent's system prompt (create_agent system_prompt=), sent first in every model request"
    elif prompt.how.startswith("create_react_agent"):
        what = "the agent's system prompt (create_react_agent prompt=), sent first in every model request"
    else:
        what = prompt.describe(function_name)
    parameter = Parameter(
        base,
        "text",
        prompt.value,
        description=what,
        template=prompt.template,
        meta={"langchain_binding": prompt.binding, "langchain_group": group},
    )
    group.parameters.append(parameter)
    group.args[base] = prompt.role or prompt.name
    return group


#: Search settings of a vector-store retriever: kind, the vector store's default (None: only when set),
#: and when the setting applies without being set (search types).
SEARCH_SETTINGS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "k": ("int", 4, ("similarity", "mmr", "similarity_score_threshold")),
    "fetch_k": ("int", 20, ("mmr",)),
    "lambda_mult": ("float", 0.5, ("mmr",)),
    "score_threshold": ("float", None, ()),
}
_SEARCH_TEXT = {
    "k": "how many documents the retriever returns",
    "fetch_k": "how many documents MMR fetches before choosing k diverse ones",
    "lambda_mult": "MMR's trade-off between relevance (1) and diversity (0)",
    "score_threshold": "the lowest relevance score a returned document may have",
}


def _retriever_group(retriever: VectorStoreRetriever, base: str) -> Group | None:
    """``search_kwargs`` entries a user tunes: ``k`` always, the others where they apply or are set."""
    group = Group(retriever, "retriever", "", base)
    store = type(getattr(retriever, "vectorstore", None)).__name__
    kwargs = retriever.search_kwargs or {}
    for key, (kind, default, applies) in SEARCH_SETTINGS.items():
        if key not in kwargs and retriever.search_type not in applies:
            continue
        binding = SearchKwargBinding(retriever, key, default)
        value = binding.read()
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        rule = range_for(key, value)
        lower, upper = (rule.lower, rule.upper) if rule is not None else (None, None)
        name = f"{base}.search_kwargs.{key}"
        group.parameters.append(
            Parameter(
                name,
                kind,
                value,
                lower=lower,
                upper=upper,
                description=f"{_SEARCH_TEXT[key]} ({retriever.search_type} search over "
                f"a {store})" + (f"; range: {rule.why}" if rule else ""),
                meta={"langchain_binding": binding, "langchain_group": group},
            )
        )
        group.args[name] = key
    return group if group.parameters else None


def _make_group(obj: Any, kind: str, base: str, found: _Found) -> Group | None:
    if kind == "prompt":
        return _prompt_group(obj, base)
    if kind == "model":
        return _model_group(obj, base)
    if kind == "retriever":
        return _retriever_group(obj, base)
    return _tool_group(obj, base, found.bindings)


def discover(runnable: Any) -> tuple[list[Group], list[str]]:
    """All parameter groups reachable from ``runnable`` (an object or a list of objects).

    The same objects give the same groups (and `Parameter` objects) for as long as they live.
    """
    found = _Found()
    roots = runnable if isinstance(runnable, (list, tuple)) else [runnable]
    seen: set[int] = set()
    for index, root in enumerate(roots):
        _walk(root, "root" if len(roots) == 1 else f"root[{index}]", found, seen, 0)
    groups: list[Group] = []
    used: set[str] = set()
    candidates: list[tuple[Any, str, str, Any]] = [
        (p, "prompt", getattr(p, "name", None) or "prompt", id(p)) for p, _ in found.prompts
    ]
    candidates += [(m, "model", getattr(m, "name", None) or "model", id(m)) for m, _ in found.models]
    candidates += [(t, "tool", f"tools.{t.name}", id(t)) for t, _ in found.tools]
    candidates += [(r, "retriever", getattr(r, "name", None) or "retriever", id(r)) for r, _ in found.retrievers]
    candidates += [
        ((fn, prompt), "variable", f"{fn}.{prompt.name}", _prompt_key(prompt)) for fn, prompt in found.variables
    ]
    with _LOCK:
        for obj, kind, base, key in candidates:
            existing = _BY_OBJECT.get(key)
            live = _prompt_home(obj[1]) if kind == "variable" else obj
            if existing is not None and existing.obj is live:
                if existing in groups:
                    continue  # a variable shared by two functions, or a shared cell
                used.add(existing.base)
                if kind == "tool":  # bindings found now may be new (a chain built after the first call)
                    _add_model_bindings(existing, found.bindings)
                groups.append(existing)
                continue
            base = _unique(base, used)
            group = _code_prompt_group(*obj, base) if kind == "variable" else _make_group(obj, kind, base, found)
            if group is None:
                continue
            if kind != "variable":
                group.tag = _tag(obj, base)
                _GROUPS[group.tag] = group
            _BY_OBJECT[key] = group
            groups.append(group)
    return groups, found.inspected


def _prompt_home(prompt: CodePrompt) -> Any:
    """What holds a prompt kept in code: a globals dict or cell, or the function's literals."""
    binding = prompt.binding
    return binding.text if isinstance(binding, LiteralBinding) else binding.home  # type: ignore[attr-defined]


def _prompt_key(prompt: CodePrompt) -> Any:
    binding = prompt.binding
    if isinstance(binding, LiteralBinding):
        return (id(binding.text), binding.site)
    return (id(binding.home), binding.name)  # type: ignore[attr-defined]


def _add_model_bindings(group: Group, bindings: Sequence[RunnableBinding]) -> None:
    for parameter in group.parameters:
        shared = getattr(binding_of(parameter), "shared", None)
        if isinstance(shared, ToolModels):
            for b in bindings:
                holds = any(tool_entry_name(t) == group.obj.name for t in b.kwargs.get("tools") or [])
                if holds and all(b is not known for known in shared.model_bindings):
                    shared.model_bindings.append(b)
            return


ModelChoices = Sequence[str] | Mapping[str, Sequence[str]]


#: The fields chat models keep their model's name in (the first one a model has is used).
MODEL_NAME_FIELDS = ("model_name", "model", "model_id")


def _model_name_field(model: Any) -> str | None:
    fields = getattr(type(model), "model_fields", {})
    for name in MODEL_NAME_FIELDS:
        if name in fields and isinstance(getattr(model, name, None), str):
            return name
    return None


def model_choice_parameters(groups: Sequence[Group], model_choices: ModelChoices) -> list[Parameter]:
    """The name of each chat model as a ``choice`` among the alternatives you name.

    ``model_choices`` is a list (for every model found) or a mapping from a model's parameter
    prefix (``"llm"``), its parameter name (``"llm.model_name"``) or a glob to the alternatives.
    The model's current name is always the first choice, so a run starts from what it had. A key
    that names no model is an error listing the models found.
    """
    models = [g for g in groups if g.kind == "model" and _model_name_field(g.obj) is not None]
    if isinstance(model_choices, Mapping):
        wanted = {str(k): list(v) for k, v in model_choices.items()}
    else:
        wanted = {"*": list(model_choices)}
    found: list[Parameter] = []
    used: set[str] = set()
    for group in models:
        field_name = _model_name_field(group.obj)
        name = f"{group.base}.{field_name}"
        for key, alternatives in wanted.items():
            if key in (group.base, name) or fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(group.base, key):
                used.add(key)
                found.append(_model_choice(group, name, str(field_name), alternatives))
                break
    unused = [k for k in wanted if k not in used]
    if unused:
        known = [
            f"{g.base} ({g.base}.{_model_name_field(g.obj)} = {getattr(g.obj, str(_model_name_field(g.obj)))!r})"
            for g in models
        ]
        raise NoParametersFound(
            f"model_choices names no model: {unused}; the models found are "
            f"{known or 'none (no chat model with a model name field)'}"
        )
    return found


def _model_choice(group: Group, name: str, field_name: str, alternatives: Sequence[str]) -> Parameter:
    current = getattr(group.obj, field_name)
    choices = [current, *(str(a) for a in alternatives if str(a) != current)]
    key = tuple(choices)
    parameter = group.choices.get(key)
    if parameter is None:
        parameter = group.choices[key] = Parameter(
            name,
            "choice",
            current,
            choices=choices,
            description=f"which model {type(group.obj).__name__} calls",
            meta={"langchain_binding": FieldBinding(group.obj, field_name), "langchain_group": group},
        )
        group.args[name] = field_name
    return parameter


def all_parameters(runnable: Any, model_choices: ModelChoices | None = None) -> tuple[list[Parameter], list[str]]:
    """Every parameter found in ``runnable`` and what was inspected (for error messages)."""
    groups, inspected = discover(runnable)
    parameters = [p for g in groups for p in g.parameters]
    if model_choices:
        parameters += model_choice_parameters(groups, model_choices)
    return parameters, inspected


def parameters_of(
    runnable: Any,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    *,
    model_choices: ModelChoices | None = None,
) -> list[Parameter]:
    """The parameters to optimize in a chain, graph, agent, model, prompt or tool (or a list of them).

    ``include``/``exclude`` are parameter names or glob patterns (``"prompt.*"``, ``"*.temperature"``),
    chosen by `opto_core.kernel.binding.select` (a pattern that matches nothing is an error listing the
    names); this list leaves out what they leave out, while a `ChainTarget` keeps those frozen and
    visible. Calling this twice on the same objects returns the same `Parameter` objects. Raises
    `NoParametersFound`, listing what was inspected, when nothing is left. ``model_choices`` adds
    each chat model's name as a ``choice`` (see `model_choice_parameters`).
    """
    parameters, inspected = all_parameters(runnable, model_choices)
    names = [p.name for p in parameters]
    try:
        chosen = select(names, include, exclude)
    except UnknownParameters as exc:
        what = "include" if str(exc).startswith("include") else "exclude"
        raise NoParametersFound(f"{what} names no parameter: {exc.unknown}; found: {names}") from None
    selected = [p for p in parameters if p.name in chosen]
    if not selected:
        listing = "\n  ".join(inspected) if inspected else "(no LangChain object)"
        why = (
            f"all {len(parameters)} found were excluded ({names})"
            if parameters
            else "no prompt template, chat model setting or tool function was found (nor a prompt kept in code)"
        )
        raise NoParametersFound(
            f"no trainable parameter: {why}. Inspected:\n  {listing}\n"
            f"Pass the objects that hold them (parameters_of([chain, model, my_tool])) or "
            f"your own Parameter objects."
        )
    return selected


def bound_parameters(
    runnable: Any,
    parameters: Sequence[Parameter] | None = None,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    model_choices: ModelChoices | None = None,
) -> BoundParameters:
    """The runnable's parameters with their bindings (found by `parameters_of` unless given).

    Found parameters are copies, so that freezing some for this target leaves other targets over
    the same objects alone; parameters you pass are used as they are (``model_choices`` adds the
    models' names to them). A `ChainTarget` gives its own.
    """
    if isinstance(runnable, BoundTarget):
        if include is not None or exclude is not None:
            runnable.bound.freeze_except(select(runnable.bound.names(), include, exclude))
        return runnable.bound
    if parameters is not None and model_choices:
        groups, _ = discover(runnable)
        given = {p.name for p in parameters}
        parameters = [
            *parameters,
            *(p.copy() for p in model_choice_parameters(groups, model_choices) if p.name not in given),
        ]
    if parameters is None:
        found, inspected = all_parameters(runnable, model_choices)
        if not found:
            listing = "\n  ".join(inspected) if inspected else "(no LangChain object)"
            raise NoParametersFound(
                f"no trainable parameter: no prompt template, chat model setting or tool "
                f"function was found (nor a prompt kept in code). Inspected:\n  {listing}"
            )
        parameters = [p.copy() for p in found]
    entries = []
    for parameter in parameters:
        if not isinstance(parameter, Parameter):
            raise TypeError(f"parameters must be opto_core Parameter objects, got {type(parameter).__name__}")
        entries.append((parameter, binding_of(parameter)))
    return BoundParameters(entries, include=include, exclude=exclude)
