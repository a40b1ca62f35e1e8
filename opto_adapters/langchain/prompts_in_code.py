"""Prompts kept in code: the system prompt of a ``create_agent`` agent, and prompts a function passes to a model.

Two places hold a prompt that no prompt template carries:

- ``langchain.agents.create_agent(model, tools, system_prompt=...)`` turns the prompt into a
  `SystemMessage` that its ``model`` node prepends to every request. The node function keeps it
  in a closure variable (`agent_prompt_cell`); it is never part of the graph's state.
- A LangGraph node function, a ``RunnableLambda`` or a helper they call builds the messages
  itself: ``llm.invoke([SystemMessage(SYSTEM), *state["messages"]])`` with ``SYSTEM`` a module
  constant or a closure variable (`prompt_variables`).

Both become ``text`` parameters bound to the variable (`PromptVariableBinding`); the graph links
each to the model calls that received its message (see `links.Links.prompt_source`).
"""

from __future__ import annotations

import ast
import types
from typing import Any, Iterator

from langchain_core.messages import BaseMessage

from opto_core.kernel.code import SourceUnavailable, function_source

#: Calls whose first argument (or ``content=``) is a message's text.
_MESSAGE_CALLS = {"SystemMessage", "HumanMessage", "AIMessage", "ChatMessage", "from_template"}
#: Role names in ``("system", TEXT)`` tuples and ``{"role": ..., "content": TEXT}`` dicts.
_ROLES = {"system", "developer", "human", "user", "ai", "assistant"}


def agent_prompt_cell(function: Any) -> types.CellType | None:
    """The closure cell where ``create_agent`` keeps its system prompt, if ``function`` is its model node.

    PRIVATE FRAMEWORK DETAIL, isolated here on purpose: LangChain has no public way to read or
    change a built agent's static prompt. ``langchain/agents/factory.py`` (1.x) turns
    ``system_prompt`` into a local ``system_message`` (a `SystemMessage`, or None) that its
    ``model_node`` and ``amodel_node`` functions close over (one shared cell, read on every call).
    ``tests/langchain/test_lc_agents.py::test_create_agent_keeps_its_prompt_where_we_look`` fails
    when a LangChain release moves it; the ``langchain`` extra pins the tested range.
    """
    if not isinstance(function, types.FunctionType) or function.__closure__ is None:
        return None
    if function.__module__ != "langchain.agents.factory" or function.__name__ not in ("model_node", "amodel_node"):
        return None
    names = function.__code__.co_freevars
    if "system_message" not in names:
        return None
    cell = function.__closure__[names.index("system_message")]
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return None
    return cell if isinstance(value, BaseMessage) and isinstance(value.content, str) else None


def _is_prompt_value(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, BaseMessage) and value.type == "system" and isinstance(value.content, str)


def _names_used_as_message_text(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """Names a function's code passes as a message's text, or puts into a list as a message (``True``).

    Read from the syntax tree: nothing is run."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if callee in _MESSAGE_CALLS:
                for arg in [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("content", "template"))]:
                    if isinstance(arg, ast.Name):
                        yield arg.id, False
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            role, text = node.elts
            if isinstance(role, ast.Constant) and role.value in _ROLES and isinstance(text, ast.Name):
                yield text.id, False
        elif isinstance(node, ast.Dict):
            entries = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
            if "role" in entries and isinstance(entries.get("content"), ast.Name):
                yield entries["content"].id, False
        elif isinstance(node, (ast.List, ast.Tuple)):
            yield from ((e.id, True) for e in node.elts if isinstance(e, ast.Name))  # [SYSTEM_MESSAGE, *messages]


def prompt_variables(function: types.FunctionType) -> list[tuple[str, Any]]:
    """``(name, home)`` of each prompt ``function`` passes to a model; ``home`` is a globals dict or a cell.

    A name counts when the code uses it as a message's text (``SystemMessage(SYSTEM)``,
    ``("system", SYSTEM)``, ``{"role": "system", "content": SYSTEM}``) and it holds a string, or
    when it holds a system message that the code puts into a list. Module globals are the
    function's own ``__globals__``: after ``from prompts import SYSTEM`` that is the copy the
    function reads, so that is the one to change.
    """
    try:
        tree = ast.parse(function_source(function))
    except (SourceUnavailable, SyntaxError, ValueError):
        return []
    code = function.__code__
    cells = dict(zip(code.co_freevars, function.__closure__ or ()))
    found: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for name, as_message in _names_used_as_message_text(tree):
        if name in seen:
            continue
        if name in cells:
            try:
                value = cells[name].cell_contents
            except ValueError:
                continue
            home: Any = cells[name]
        elif name in code.co_names and name in function.__globals__:
            value, home = function.__globals__[name], function.__globals__
        else:
            continue  # a local variable or a parameter: built per call, nothing to bind
        if _is_prompt_value(value) and (isinstance(value, BaseMessage) or not as_message):
            seen.add(name)
            found.append((name, home))
    return found
