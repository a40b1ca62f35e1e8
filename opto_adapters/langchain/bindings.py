"""Bindings: where a parameter's value lives in a LangChain object (`opto_core.kernel.binding.Binding`).

Each binding reads and writes one value and refreshes what LangChain caches from it: a template's
``input_variables`` (and the chat prompt's), the cached serialization ``_serialized`` (a
``cached_property``: traces would show the old value), a tool's ``args_schema`` after its code
changed, and the tool schemas ``bind_tools`` copied into model bindings. ``save``/``load`` keep the
raw framework state (functions, schemas, binding kwargs, message objects), so that undo is exact.
Validation is not done here: every value was checked by its `Parameter` before a write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.prompts.string import get_template_variables
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import BaseTool

from opto_core.kernel.binding import AttributeBinding, Binding
from opto_core.kernel.code import compile_like, function_source


def drop_serialized(obj: Any) -> None:
    """`Serializable._serialized` is a cached property: drop it so traces show the new value."""
    try:
        obj.__dict__.pop("_serialized", None)
    except AttributeError:
        pass


def _refresh_chat_prompt(prompt: ChatPromptTemplate) -> None:
    """Recompute ``input_variables`` the way `ChatPromptTemplate`'s validator does."""
    names: set[str] = set()
    for message in prompt.messages:
        if isinstance(message, MessagesPlaceholder):
            if not message.optional:
                names.add(message.variable_name)
        elif hasattr(message, "input_variables"):
            names.update(message.input_variables)
    names -= set(prompt.partial_variables or {})
    prompt.input_variables = sorted(names)
    drop_serialized(prompt)


@dataclass
class TemplateBinding(Binding):
    """A `PromptTemplate` (alone, or inside a message template of a `ChatPromptTemplate`)."""

    template: PromptTemplate
    owner: ChatPromptTemplate | None = None
    message: Any = None

    def read(self) -> str:
        return self.template.template

    def write(self, value: str) -> None:
        self.template.template = value
        self.template.input_variables = sorted(get_template_variables(value, self.template.template_format))

    def refresh(self) -> None:
        drop_serialized(self.template)
        if self.message is not None:
            drop_serialized(self.message)
        if self.owner is not None:
            _refresh_chat_prompt(self.owner)

    def save(self) -> Any:
        return (
            self.template.template,
            list(self.template.input_variables),
            list(self.owner.input_variables) if self.owner is not None else None,
        )

    def load(self, state: Any) -> None:
        template, variables, owner_variables = state
        self.template.template = template
        self.template.input_variables = list(variables)
        self.refresh()
        if self.owner is not None:
            self.owner.input_variables = list(owner_variables)

    def describe(self) -> str:
        return f"the template of a {type(self.owner or self.template).__name__}"


class FieldBinding(AttributeBinding):
    """A model setting such as ``temperature`` (LangChain does no type check on assignment)."""

    def refresh(self) -> None:
        drop_serialized(self.obj)

    def save(self) -> Any:
        return getattr(self.obj, self.attribute)


# ----- retrievers -------------------------------------------------------------------------------------
@dataclass
class SearchKwargBinding(Binding):
    """One entry of a vector-store retriever's ``search_kwargs`` (``k``, ``fetch_k``, ``score_threshold``).

    A write replaces the dict (a copy with the new entry), so a dict shared with other retrievers
    is never changed under them; ``default`` is what the vector store uses while the entry is unset.
    """

    retriever: Any
    key: str
    default: Any = None

    def read(self) -> Any:
        return (self.retriever.search_kwargs or {}).get(self.key, self.default)

    def write(self, value: Any) -> None:
        self.retriever.search_kwargs = {**(self.retriever.search_kwargs or {}), self.key: value}

    def refresh(self) -> None:
        drop_serialized(self.retriever)

    def save(self) -> Any:
        return self.retriever.search_kwargs

    def load(self, state: Any) -> None:
        self.retriever.search_kwargs = state
        self.refresh()

    def describe(self) -> str:
        return f"search_kwargs[{self.key!r}] of a {type(self.retriever).__name__}"


# ----- tools ------------------------------------------------------------------------------------------
def tool_entry_name(entry: Any) -> str | None:
    if isinstance(entry, dict):
        function = entry.get("function")
        if isinstance(function, dict) and function.get("name"):
            return str(function["name"])
        return entry.get("name")
    return getattr(entry, "name", None)


def _rebind(binding: RunnableBinding, tool: BaseTool) -> None:
    """Replace ``tool``'s schema inside a model binding made by ``bind_tools``, in the model's format."""
    tools = list(binding.kwargs.get("tools") or [])
    try:
        fresh = binding.bound.bind_tools([tool]).kwargs["tools"][0]  # type: ignore[attr-defined]
    except Exception:  # a model whose bind_tools cannot be called again: the OpenAI format
        from langchain_core.utils.function_calling import convert_to_openai_tool

        fresh = convert_to_openai_tool(tool)
    binding.kwargs = {**binding.kwargs, "tools": [fresh if tool_entry_name(t) == tool.name else t for t in tools]}


@dataclass
class ToolModels:
    """Shared by a tool's code and description bindings: the model bindings that hold its schema."""

    tool: BaseTool
    model_bindings: list[RunnableBinding] = field(default_factory=list)

    def refresh(self) -> None:
        drop_serialized(self.tool)
        for binding in self.model_bindings:
            _rebind(binding, self.tool)

    def save(self) -> list[Any]:
        return [binding.kwargs for binding in self.model_bindings]

    def load(self, saved: list[Any]) -> None:
        drop_serialized(self.tool)
        for binding, kwargs in zip(self.model_bindings, saved):
            binding.kwargs = kwargs


@dataclass
class DescriptionBinding(Binding):
    shared: ToolModels

    def read(self) -> str:
        return self.shared.tool.description

    def write(self, value: str) -> None:
        self.shared.tool.description = value

    def refresh(self) -> None:
        self.shared.refresh()

    def save(self) -> Any:
        return self.shared.tool.description, self.shared.save()

    def load(self, state: Any) -> None:
        self.shared.tool.description = state[0]
        self.shared.load(state[1])

    def describe(self) -> str:
        return f"the description of tool {self.shared.tool.name!r}"


def schema_for(name: str, function: Callable[..., Any]) -> Any:
    from langchain_core.tools.base import create_schema_from_function

    return create_schema_from_function(name, function, filter_args=["run_manager", "callbacks"])


@dataclass
class CodeBinding(Binding):
    """A tool's Python function; an accepted source is compiled like the original (`opto_core.kernel.code`)."""

    shared: ToolModels
    original: Callable[..., Any]
    source: str
    inferred_schema: bool
    _compiled: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._original_schema = self.shared.tool.args_schema

    def read(self) -> str:
        func = self.shared.tool.func  # type: ignore[attr-defined]
        if func is self.original:
            return self.source
        return function_source(func)  # compiled here: registered in linecache and the core's index

    def write(self, value: str) -> None:
        tool = self.shared.tool
        if value == self.source:
            function = self.original
        else:
            function = self._compiled.get(value)
            if function is None:
                function = self._compiled[value] = compile_like(value, self.original, label=f"tool {tool.name}")
        tool.func = function  # type: ignore[attr-defined]
        if self.inferred_schema:
            tool.args_schema = self._original_schema if function is self.original else schema_for(tool.name, function)

    def refresh(self) -> None:
        self.shared.refresh()

    def save(self) -> Any:
        return self.shared.tool.func, self.shared.tool.args_schema, self.shared.save()  # type: ignore[attr-defined]

    def load(self, state: Any) -> None:
        tool = self.shared.tool
        tool.func, tool.args_schema = state[0], state[1]  # type: ignore[attr-defined]
        self.shared.load(state[2])

    def describe(self) -> str:
        return f"the code of tool {self.shared.tool.name!r}"
