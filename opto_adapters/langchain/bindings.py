"""Bindings: where a parameter's value lives in a LangChain object, and how to write it back.

A binding reads and writes one value and refreshes what LangChain caches from it: a template's
``input_variables`` (and the chat prompt's), the cached serialization ``_serialized`` (a
``cached_property``: traces would show the old value), a tool's ``args_schema`` after its code
changed, and the tool schemas ``bind_tools`` copied into model bindings. ``save``/``load`` keep
the raw framework state (functions, schemas, binding kwargs), so that undo is exact.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.prompts.string import get_template_variables
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import BaseTool


# ----- bindings: where a value lives and how to write it back --------------------------------------
class Binding:
    """Reads and writes one parameter's value in a live LangChain object."""

    def get(self) -> Any:
        raise NotImplementedError

    def set(self, value: Any) -> None:
        raise NotImplementedError

    def save(self) -> Any:
        """The raw state `load` puts back exactly (not only the value: caches too)."""
        raise NotImplementedError

    def load(self, state: Any) -> None:
        raise NotImplementedError


def _drop_serialized(obj: Any) -> None:
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
    _drop_serialized(prompt)


@dataclass
class TemplateBinding(Binding):
    """A `PromptTemplate` (alone, or inside a message template of a `ChatPromptTemplate`)."""

    template: PromptTemplate
    owner: ChatPromptTemplate | None = None
    message: Any = None

    def get(self) -> str:
        return self.template.template

    def set(self, value: str) -> None:
        self.template.template = value
        self.template.input_variables = sorted(get_template_variables(value, self.template.template_format))
        _drop_serialized(self.template)
        if self.message is not None:
            _drop_serialized(self.message)
        if self.owner is not None:
            _refresh_chat_prompt(self.owner)

    def save(self) -> Any:
        return (self.template.template, list(self.template.input_variables),
                list(self.owner.input_variables) if self.owner is not None else None)

    def load(self, state: Any) -> None:
        template, variables, owner_variables = state
        self.template.template = template
        self.template.input_variables = list(variables)
        _drop_serialized(self.template)
        if self.message is not None:
            _drop_serialized(self.message)
        if self.owner is not None:
            self.owner.input_variables = list(owner_variables)
            _drop_serialized(self.owner)


@dataclass
class FieldBinding(Binding):
    """A model setting such as ``temperature`` (LangChain does no type check on assignment)."""

    obj: Any
    name: str

    def get(self) -> Any:
        return getattr(self.obj, self.name)

    def set(self, value: Any) -> None:
        setattr(self.obj, self.name, value)
        _drop_serialized(self.obj)

    def save(self) -> Any:
        return getattr(self.obj, self.name)

    def load(self, state: Any) -> None:
        self.set(state)


def _tool_entry_name(entry: Any) -> str | None:
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
    binding.kwargs = {**binding.kwargs,
                      "tools": [fresh if _tool_entry_name(t) == tool.name else t for t in tools]}


@dataclass
class ToolBinding(Binding):
    """Shared by a tool's code and description bindings: the bindings of models that hold the tool."""

    tool: BaseTool
    model_bindings: list[RunnableBinding] = field(default_factory=list)

    def refresh_models(self) -> None:
        for binding in self.model_bindings:
            _rebind(binding, self.tool)

    def save_models(self) -> list[Any]:
        return [binding.kwargs for binding in self.model_bindings]

    def load_models(self, saved: list[Any]) -> None:
        for binding, kwargs in zip(self.model_bindings, saved):
            binding.kwargs = kwargs


@dataclass
class DescriptionBinding(Binding):
    shared: ToolBinding

    def get(self) -> str:
        return self.shared.tool.description

    def set(self, value: str) -> None:
        self.shared.tool.description = value
        _drop_serialized(self.shared.tool)
        self.shared.refresh_models()

    def save(self) -> Any:
        return self.shared.tool.description, self.shared.save_models()

    def load(self, state: Any) -> None:
        self.shared.tool.description = state[0]
        _drop_serialized(self.shared.tool)
        self.shared.load_models(state[1])


def function_source(fn: Callable[..., Any]) -> str:
    """A function's source without decorators (``@tool``), dedented; raises OSError if unavailable."""
    source = textwrap.dedent(inspect.getsource(fn))
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise OSError(f"{fn!r} is not defined by a def statement")
    lines = source.splitlines(keepends=True)
    return "".join(lines[node.lineno - 1:]).rstrip() + "\n"


def _schema_shape(schema: Any) -> dict[str, Any]:
    """What must not change in a tool's argument schema: names, types, which are required."""
    if schema is None:
        return {}
    try:
        data = schema.model_json_schema() if hasattr(schema, "model_json_schema") else dict(schema)
    except Exception:
        return {}
    properties = {name: {k: v for k, v in spec.items() if k not in ("title", "description", "default")}
                  for name, spec in (data.get("properties") or {}).items()}
    return {"properties": properties, "required": sorted(data.get("required") or [])}


@dataclass
class CodeBinding(Binding):
    """A tool's Python function: the new source is compiled in the original function's globals."""

    shared: ToolBinding
    original: Callable[..., Any]
    source: str
    inferred_schema: bool
    _compiled: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def get(self) -> str:
        func = self.shared.tool.func  # type: ignore[attr-defined]
        if func is self.original:
            return self.source
        for text, compiled in self._compiled.items():
            if compiled is func:
                return text
        return function_source(func)

    def compile(self, source: str) -> Callable[..., Any]:
        """Run the definition (imports and one ``def``) and return the function."""
        if source in self._compiled:
            return self._compiled[source]
        namespace = dict(self.original.__globals__)
        try:
            namespace.update(inspect.getclosurevars(self.original).nonlocals)
        except (TypeError, ValueError):
            pass
        exec(compile(source, f"<tool {self.shared.tool.name}>", "exec"), namespace)
        name = self.original.__name__
        function = namespace.get(name)
        if not callable(function):
            raise ValueError(f"the code does not define a function named {name!r}")
        self._compiled[source] = function
        return function

    def schema_for(self, function: Callable[..., Any]) -> Any:
        from langchain_core.tools.base import create_schema_from_function

        return create_schema_from_function(self.shared.tool.name, function,
                                           filter_args=["run_manager", "callbacks"])

    def check(self, source: str) -> str:
        """The new function must build the same argument schema the tool (and the model) use."""
        try:
            function = self.compile(source)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"defining the function failed: {type(exc).__name__}: {exc}") from None
        try:
            old_shape = _schema_shape(self.schema_for(self.original))
        except Exception:  # the original builds no schema (unusual annotations): nothing to compare
            return source
        try:
            new_shape = _schema_shape(self.schema_for(function))
        except Exception as exc:
            raise ValueError(f"the tool's argument schema cannot be built from the new code: {exc}") from None
        if new_shape != old_shape:
            raise ValueError(f"the tool's argument schema would change from {old_shape} to {new_shape}; "
                             "keep the argument names, types and defaults")
        return source

    def set(self, value: str) -> None:
        tool = self.shared.tool
        function = self.original if value == self.source else self.compile(value)
        tool.func = function  # type: ignore[attr-defined]
        if self.inferred_schema:
            tool.args_schema = self.schema_for(function) if function is not self.original else self._original_schema
        _drop_serialized(tool)
        self.shared.refresh_models()

    def save(self) -> Any:
        return self.shared.tool.func, self.shared.tool.args_schema, self.shared.save_models()  # type: ignore[attr-defined]

    def load(self, state: Any) -> None:
        tool = self.shared.tool
        tool.func, tool.args_schema = state[0], state[1]  # type: ignore[attr-defined]
        _drop_serialized(tool)
        self.shared.load_models(state[2])

    def __post_init__(self) -> None:
        self._original_schema = self.shared.tool.args_schema
