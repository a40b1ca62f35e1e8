"""Every private attribute of AgentChat the adapter touches, one accessor each, and why.

AgentChat 0.7 (``autogen-agentchat``, ``autogen-core``, ``autogen-ext``) builds agents and teams
from constructor arguments and offers no public way to change them afterwards: no setter for an
agent's system message, model client or tools, no way to make a team register replaced
participants (``shared/notes/autogen.md``). Optimizing a live agent in place needs these few
private attributes, and they live here and nowhere else. ``tests/autogen/test_autogen_compat.py`` checks
every one against the installed AgentChat and fails when a release changes it; `TESTED_RANGE` is
what it passed on, and the ``autogen`` extra in ``pyproject.toml`` pins the same range.

Everything else goes through public seams: settings and tool overrides are read from
``dump_component()``, a tool is rebuilt with ``FunctionTool(...)`` from its public ``schema``,
conversation state moves with ``save_state``/``load_state``, an OpenAI client gets a new HTTP
pool through its pickling protocol, and every run happens on the adapter's one event loop
(`opto_adapters.autogen.eventloop`), so nothing has to be moved between loops.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

#: The autogen-agentchat / autogen-core / autogen-ext versions these accessors were tested on.
TESTED_RANGE = ">=0.7.4,<0.8"


# ----- an AssistantAgent ----------------------------------------------------------------------------
def model_client(agent: Any) -> Any:
    """The agent's model client.

    Why private: ``AssistantAgent`` keeps its client in ``_model_client`` and calls it on every
    turn; there is no property. Installing the recording client there (`set_model_client`) is what
    lets every request be recorded and checked (`RecordingClient`); ``unwrap`` puts this one back.
    """
    return agent._model_client


def set_model_client(agent: Any, client: Any) -> None:
    """Why private: see `model_client`; the client is a constructor argument with no setter."""
    agent._model_client = client


def system_messages(agent: Any) -> list[Any]:
    """The agent's system messages (a list of ``SystemMessage``), as it sends them.

    Why private: ``agent.system_message`` does not exist, and ``dump_component()`` would also dump
    the model client (the recorder); the agent re-reads ``_system_messages`` at every turn.
    """
    return agent._system_messages


def set_system_messages(agent: Any, messages: list[Any]) -> None:
    """Why private: there is no setter; ``agent.system_message = ...`` is silently ignored."""
    agent._system_messages = messages


def tool_lists(agent: Any) -> list[list[Any]]:
    """The tool lists of the agent's ``StaticWorkbench``es (the agent's ``tools=`` list is the first
    one's list: the same object), which AgentChat reads at every turn.

    Why private: a workbench lists its tools only asynchronously and as schemas (``list_tools``);
    replacing a tool in place (new code or description) needs the list itself.
    """
    from autogen_core.tools import StaticWorkbench

    return [workbench._tools for workbench in agent._workbench or [] if isinstance(workbench, StaticWorkbench)]


def tool_function(tool: Any) -> Callable[..., Any]:
    """The Python function of a ``FunctionTool``.

    Why private: ``FunctionTool`` exposes its schema, not its function; the code parameter is that
    function's source, and new code is compiled with its globals (`opto_core.kernel.code.compile_like`).
    """
    return tool._func


# ----- a team --------------------------------------------------------------------------------------
def participants(team: Any) -> list[Any]:
    """The team's participant list (wrapped agents replace entries in place).

    Why private: ``BaseGroupChat`` keeps its participants in ``_participants`` and has no property.
    """
    return team._participants


def selector_client(team: Any) -> Any:
    """A ``SelectorGroupChat``'s model client (the one that chooses the next speaker).

    Why private: it is a constructor argument kept in ``_model_client``; the group-chat manager
    takes it from there when the team registers its agents, so a recorder set there
    (`set_selector_client`) records every selection.
    """
    return team._model_client


def set_selector_client(team: Any, client: Any) -> None:
    """Why private: see `selector_client`."""
    team._model_client = client


def registration(team: Any) -> tuple[bool, bool]:
    """``(registered, own_runtime)``: whether the team registered its participants with its runtime
    (it ran, was reset, or had its state saved or loaded), and whether that runtime is its own.

    Why private: AgentChat registers participants once (``BaseGroupChat._init``) and says so only in
    ``_initialized``; whether the runtime was passed by the user only in ``_embedded_runtime``.
    """
    return bool(team._initialized), bool(team._embedded_runtime)


def register_again(team: Any) -> None:
    """Give the team a fresh runtime and output queue, so that its next ``_init`` (run by the public
    ``load_state``) registers its current participants there.

    Why private: registration captures the participant objects; wrapping replaces them, and
    AgentChat offers no way to unregister. The output queue is replaced too: asyncio binds it to the
    loop of the team's first run (the user's own ``asyncio.run``), and every run now happens on the
    adapter's loop. Only for a team whose runtime is its own (see `registration`).
    """
    from autogen_core import SingleThreadedAgentRuntime

    team._runtime = SingleThreadedAgentRuntime(ignore_unhandled_exceptions=False)  # as BaseGroupChat.__init__
    team._output_message_queue = asyncio.Queue()
    team._initialized = False


__all__ = [
    "TESTED_RANGE",
    "model_client",
    "participants",
    "register_again",
    "registration",
    "selector_client",
    "set_model_client",
    "set_selector_client",
    "set_system_messages",
    "system_messages",
    "tool_function",
    "tool_lists",
]
