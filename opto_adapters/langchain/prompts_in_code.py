"""Prompts kept in code: where LangChain and LangGraph programs keep prompts that no template object carries.

- ``langchain.agents.create_agent(model, tools, system_prompt=...)`` turns the prompt into a
  `SystemMessage` that its ``model`` node prepends to every request, kept in a closure variable
  (`_compat.agent_prompt_cell`); it is never part of the graph's state.
- ``langgraph.prebuilt.create_react_agent(model, tools, prompt="...")`` keeps it in the closure of
  its ``Prompt`` step (`_compat.react_prompt_cell`).
- ``@dynamic_prompt`` middleware returns the prompt from a function of yours
  (`_compat.dynamic_prompt_function`): its return value is the prompt.
- A LangGraph node, a ``RunnableLambda``, a tool or a helper they call builds the messages itself:
  ``llm.invoke([SystemMessage(SYSTEM.format(company=c)), *state["messages"]])``, an f-string, ``%``,
  ``+`` of constants, an alias, a ``ChatPromptTemplate`` built inside the function.

The last two are read from the syntax tree by the core (`opto_core.kernel.code_prompts`, the same
reader every adapter uses); this module only says which LangChain calls take a message's text
(`SINKS`) and how a message object carries its text. The graph links each prompt to the model
calls that received it, by the core's provenance rules (`links.Links.prompt_sources`).
"""

from __future__ import annotations

import types
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableBinding

from opto_adapters.langchain import _compat
from opto_core.kernel.code_prompts import CodePrompt, Sink, VariableBinding, prompts_in_function


def _is_model(value: Any) -> bool:
    """A model, or a model with bound settings or tools (``llm.bind_tools(...)``): its input is the prompt."""
    for _ in range(8):
        if not isinstance(value, RunnableBinding):
            break
        value = value.bound
    return isinstance(value, BaseLanguageModel)


#: LangChain calls whose argument is a message's (or prompt's) text.
SINKS: tuple[Sink, ...] = (
    Sink("SystemMessage", role="system"),
    Sink("HumanMessage", role="human"),
    Sink("AIMessage", role="ai"),
    Sink("ChatMessage"),
    Sink("from_template", (0, "template"), renders=True),
    Sink("SystemMessagePromptTemplate.from_template", (0, "template"), role="system", renders=True),
    Sink("HumanMessagePromptTemplate.from_template", (0, "template"), role="human", renders=True),
    Sink("AIMessagePromptTemplate.from_template", (0, "template"), role="ai", renders=True),
    Sink("PromptTemplate", (0, "template"), renders=True),
    Sink("from_messages", (), renders=True),  # its (role, TEXT) tuples are templates
    Sink("override", ("system_prompt", "system_message"), role="system"),  # middleware: request.override(...)
    Sink("invoke", (0, "input"), role="human", receiver=_is_model),  # llm.invoke(PROMPT.format(...))
    Sink("ainvoke", (0, "input"), role="human", receiver=_is_model),
)


def message_text(value: Any) -> str | None:
    """The text of a message a variable holds (only system messages are prompts kept in variables)."""
    if isinstance(value, BaseMessage) and value.type == "system" and isinstance(value.content, str):
        return value.content
    return None


def with_text(message: BaseMessage, text: str) -> BaseMessage:
    """The same message with a new text (a copy: the old object may still be in a past run's state)."""
    return message.model_copy(update={"content": text})


def code_prompts(function: Any, *, returns: bool = False) -> list[CodePrompt]:
    """The prompts a LangChain program's function builds in code (see the module doc)."""
    return prompts_in_function(function, SINKS, returns=returns, text_of=message_text, with_text=with_text)


def _cell_prompt(cell: types.CellType | None, how: str) -> CodePrompt | None:
    """The system message a framework keeps in ``cell`` (found by `_compat`) as a prompt kept in code."""
    if cell is None:
        return None
    value = cell.cell_contents
    text = message_text(value)
    if text is None:
        return None
    binding = VariableBinding(cell, "system_prompt", message_text, with_text)
    return CodePrompt("system_prompt", text, None, binding, how, "system", obj=value)


def agent_prompt(function: Any) -> CodePrompt | None:
    """``create_agent``'s system prompt, if ``function`` is its model node (`_compat.agent_prompt_cell`)."""
    return _cell_prompt(_compat.agent_prompt_cell(function), "create_agent system_prompt=")


def react_prompt(function: Any) -> CodePrompt | None:
    """``create_react_agent(prompt=...)``'s system prompt, if ``function`` is its ``Prompt`` step
    (`_compat.react_prompt_cell`)."""
    return _cell_prompt(_compat.react_prompt_cell(function), "create_react_agent prompt=")
