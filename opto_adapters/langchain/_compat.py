"""Every internal of LangChain the adapter touches, and why no public seam works.

``tests/langchain/test_lc_compat.py`` fails when a LangChain release changes one of them;
`TESTED_RANGE` is what it passed on, and the ``langchain`` extra in ``pyproject.toml`` pins the
same range. The accessors:

- `CHAT_MESSAGES_SCHEMA`: a private keyword of ``BaseTracer`` (chat inputs kept as messages);
- `current_parent_run`: an internal context variable (the runnable being executed);
- `agent_prompt_cell`, `react_prompt_cell`: the closure cells where ``create_agent`` and
  ``create_react_agent`` keep their system prompts (no public way to read or change a built
  agent's static prompt);
- `dynamic_prompt_function`: your function behind a ``@dynamic_prompt`` middleware (a closure cell);
- `needs_async_api`: LangGraph's refusal to ``invoke`` a graph whose nodes are ``async def`` only
  (recognised by its message: LangGraph raises a plain ``TypeError``).

`opto_adapters.langchain.prompts_in_code` turns the cells into prompt parameters.
"""

from __future__ import annotations

import types
from typing import Any
from uuid import UUID

#: The langchain-core versions these accessors were tested on.
TESTED_RANGE = ">=1.0,<2"

#: ``BaseTracer.__init__`` keyword that keeps chat-model inputs as messages.
#: Why private: ``BaseTracer`` turns a chat model's input messages into one prompt string unless its
#: private ``_schema_format`` is ``"original+chat"`` (what LangChain's own streaming tracer uses); the
#: graph needs the messages (their ids and tool-call ids link values to the steps that made them).
CHAT_MESSAGES_SCHEMA: dict[str, Any] = {"_schema_format": "original+chat"}


def current_parent_run() -> UUID | None:
    """The run LangChain is executing in this thread or task: the parent its config gives children.

    Why internal: LangChain keeps the config of the runnable it is running in the context variable
    ``langchain_core.runnables.config.var_child_runnable_config`` (set when it enters a runnable)
    and offers no accessor; its callback manager names that run as ``parent_run_id``.
    """
    from langchain_core.runnables.config import var_child_runnable_config

    config = var_child_runnable_config.get()
    if not config:
        return None
    return getattr(config.get("callbacks"), "parent_run_id", None)


def _closure_cell(function: Any, module: str, names: tuple[str, ...], variable: str) -> types.CellType | None:
    """The cell of ``variable`` that ``function`` closes over, if it is one of ``module``'s ``names``, else None."""
    if not isinstance(function, types.FunctionType) or function.__closure__ is None or function.__module__ != module:
        return None
    if function.__name__ not in names or variable not in function.__code__.co_freevars:
        return None
    return function.__closure__[function.__code__.co_freevars.index(variable)]


def _system_message_in(cell: types.CellType | None) -> types.CellType | None:
    """``cell`` if it holds a `SystemMessage` (an empty cell, ``None`` or a callable prompt: None)."""
    from langchain_core.messages import SystemMessage

    if cell is None:
        return None
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return None
    return cell if isinstance(value, SystemMessage) else None


def agent_prompt_cell(function: Any) -> types.CellType | None:
    """The closure cell where ``create_agent`` keeps its system prompt, if ``function`` is its model node.

    Why private: ``langchain/agents/factory.py`` (1.x) turns ``system_prompt`` into a local
    ``system_message`` (a `SystemMessage`, or None) that ``model_node`` and ``amodel_node`` close over
    (one shared cell); the built graph offers no public way to read or change it.
    """
    return _system_message_in(
        _closure_cell(function, "langchain.agents.factory", ("model_node", "amodel_node"), "system_message")
    )


def react_prompt_cell(function: Any) -> types.CellType | None:
    """The closure cell of ``create_react_agent(prompt=...)``'s system message, if ``function`` is its ``Prompt`` step.

    Why private: ``langgraph/prebuilt/chat_agent_executor.py`` (1.x, ``_get_prompt_runnable``) wraps
    a string prompt as ``_system_message = SystemMessage(prompt)`` and keeps a `SystemMessage` as
    ``prompt``, in the closure of a lambda that prepends it to the state's messages.
    """
    for variable in ("_system_message", "prompt"):
        cell = _system_message_in(
            _closure_cell(function, "langgraph.prebuilt.chat_agent_executor", ("<lambda>",), variable)
        )
        if cell is not None:
            return cell
    return None


def dynamic_prompt_function(function: Any) -> types.FunctionType | None:
    """Your function behind a ``@dynamic_prompt`` middleware, if ``function`` is the wrapper it made.

    Why private: ``langchain/agents/middleware/types.py`` (1.x) builds a middleware class whose
    ``wrap_model_call`` (``wrapped``, ``async_wrapped``...) closes over your function as ``func``
    and sends its return value as the system message; the class keeps no public reference to it.
    """
    if not isinstance(function, types.FunctionType) or function.__closure__ is None:
        return None
    if function.__module__ != "langchain.agents.middleware.types" or not function.__qualname__.startswith(
        "dynamic_prompt."
    ):
        return None
    free = function.__code__.co_freevars
    if "func" not in free:
        return None
    try:
        user = function.__closure__[free.index("func")].cell_contents
    except ValueError:
        return None
    return user if isinstance(user, types.FunctionType) else None


__all__ = [
    "CHAT_MESSAGES_SCHEMA",
    "TESTED_RANGE",
    "agent_prompt_cell",
    "current_parent_run",
    "dynamic_prompt_function",
    "react_prompt_cell",
]


def needs_async_api(exc: BaseException) -> bool:
    """Whether ``exc`` is LangGraph refusing a synchronous ``invoke`` of a node that has only an async
    function ("No synchronous function provided to ... invoke via the async API").

    Why by message: LangGraph raises a plain ``TypeError`` for it (``RunnableCallable.invoke``), with no
    type or attribute of its own to test.
    """
    text = str(exc)
    return isinstance(exc, TypeError) and "No synchronous function provided" in text and "async API" in text
