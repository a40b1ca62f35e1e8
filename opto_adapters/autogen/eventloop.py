"""Running one AgentChat team or model client on several event loops, and wrapping a team after it ran.

A user runs a team with ``asyncio.run(team.run(task=...))``; the optimizer then runs it on the
adapter's loop thread; afterwards the user runs it again with a new ``asyncio.run``. AgentChat
0.7 ties two things to the first loop that used them (``shared/notes/autogen.md``, "AgentChat
0.7.5 in a new event loop"):

- the team's ``_output_message_queue`` (an ``asyncio.Queue`` created once in
  ``BaseGroupChat.__init__`` and shared with the group-chat manager) binds to the loop where its
  ``get()`` first waited: on another loop every run fails with "... is bound to a different event
  loop";
- an ``OpenAIChatCompletionClient`` builds its ``AsyncOpenAI`` (an httpx pool) once; keep-alive
  connections of a closed loop give "Event loop is closed" on the next request.

There is no public way to move either to a new loop, so `adopt_running_loop` uses private
attributes. A third thing is tied to a team's first run (or reset): its participants are
registered with the team's runtime (``BaseGroupChat._init``), each inside a container that holds
the agent object itself. Wrapping a team that already ran replaces participants, so the runtime
must register them again: `reregister_participants` (public ``save_state``/``load_state`` around
a fresh embedded runtime; private attributes for the swap; `check_reregistrable` and
`needs_reregistration` only read flags). The adapter touches these private attributes here and
nowhere else; ``tests/autogen/test_autogen_eventloop.py`` checks each one and fails when AutoGen
changes them; the range below is what it passed on.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

#: The autogen-agentchat / autogen-ext versions whose private attributes this module was tested on.
TESTED_RANGE = ">=0.7.4,<0.8"

# model client -> the loop it was last used on (weak both ways: neither is kept alive by this table)
_CLIENT_LOOPS: weakref.WeakKeyDictionary[Any, weakref.ref[asyncio.AbstractEventLoop]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def adopt_running_loop(*objects: Any) -> None:
    """Make teams and model clients usable on the running event loop (a no-op on the loop they know).

    - a team (``BaseGroupChat``, nested teams included): its output queue, if bound to another
      loop and idle, is unbound (``queue._loop = None``: asyncio binds it again on first use);
    - a model client that keeps an ``AsyncOpenAI`` (``OpenAIChatCompletionClient``, the Azure one):
      when it was last used on another loop, or never through this function, its HTTP client is
      rebuilt from its own config (``client.__setstate__(client.__getstate__())``, AutoGen's pickling
      path: ``_client`` is rebuilt from ``_raw_config``; usage counters and create args are kept),
      and the old one is closed without touching a dead loop (`_retire`).
    Anything else is left alone. Must be called from inside the loop that will use the objects.
    """
    loop = asyncio.get_running_loop()
    for obj in objects:
        queue = getattr(obj, "_output_message_queue", None)
        if isinstance(queue, asyncio.Queue):
            _rebind_queue(queue, loop)
            for participant in getattr(obj, "_participants", []) or []:
                if isinstance(getattr(participant, "_output_message_queue", None), asyncio.Queue):
                    adopt_running_loop(participant)
        elif _rebuildable(obj):
            _rebuild_client(obj, loop)


def _rebind_queue(queue: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
    bound = getattr(queue, "_loop", None)  # asyncio.mixins._LoopBoundMixin
    if bound is None or bound is loop:
        return
    # Waiters of the old loop can never be woken; an idle queue (every finished run empties it) has none.
    queue._getters.clear()  # type: ignore[attr-defined]
    queue._putters.clear()  # type: ignore[attr-defined]
    queue._loop = None  # type: ignore[attr-defined]


def _rebuildable(client: Any) -> bool:
    state = getattr(client, "__dict__", {})
    return "_raw_config" in state and "_client" in state and hasattr(type(client), "__setstate__")


def _rebuild_client(client: Any, loop: asyncio.AbstractEventLoop) -> None:
    with _LOCK:
        known = _CLIENT_LOOPS.get(client)
        old_loop = known() if known is not None else None
        if old_loop is loop:
            return
        old = client._client
        client.__setstate__(client.__getstate__())
        _CLIENT_LOOPS[client] = weakref.ref(loop)
    _retire(old, old_loop)


def _retire(old: Any, old_loop: asyncio.AbstractEventLoop | None) -> None:
    """Close a replaced ``AsyncOpenAI`` without touching a dead loop.

    On its own loop when that loop still runs (the adapter's loop thread). Otherwise its httpx
    client is only marked closed (``_state``): openai's finalizer would else schedule ``aclose()``
    on the *current* loop, which fails on sockets of the closed one ("Event loop is closed" on
    stderr); the sockets are released when the object is collected.
    """
    if old is None:
        return
    if old_loop is not None and old_loop.is_running() and not old_loop.is_closed():
        asyncio.run_coroutine_threadsafe(old.close(), old_loop)
        return
    http = getattr(old, "_client", None)
    state = type(getattr(http, "_state", None))
    closed = getattr(state, "CLOSED", None)
    if closed is not None:
        http._state = closed


def needs_reregistration(team: Any) -> bool:
    """True when a team's runtime (or a nested team's) already holds its participants: it ran, was
    reset, or had its state saved or loaded."""
    return bool(_initialized_teams(team))


def check_reregistrable(team: Any) -> None:
    """Raise a clear error unless `reregister_participants` can move ``team`` (and its nested teams).

    Only a team's own embedded runtime can be replaced: a runtime the user passed (``runtime=``)
    may host other agents, and AgentChat gives no way to unregister the team's agent types.
    """
    for each in _initialized_teams(team):
        if not each._embedded_runtime:
            raise RuntimeError(f"team {each.name!r} runs on a runtime you passed (runtime=) and has already run or "
                               f"been reset, so its agents are registered there for good; wrap it (wrap_team) "
                               f"before its first run or reset")
        if each._is_running:
            raise RuntimeError(f"team {each.name!r} is running; wrap it when no run is in progress")


async def reregister_participants(team: Any) -> None:
    """Register a team's *current* participants again, keeping the whole conversation state.

    Call it after replacing entries of ``team._participants`` in a team that already ran. Its
    state (every participant's state, hence each agent's model context; the group-chat manager's
    message thread and next speaker; nested teams included) is saved with the public
    ``save_state()``, the team (and each nested team that ran) gets a new embedded
    ``SingleThreadedAgentRuntime`` and ``_initialized = False`` (private: ``BaseGroupChat._init``
    then registers the current participants), and ``load_state()`` puts the state back. The team
    object, its termination condition, output queue and name stay; the old runtime is idle (every
    finished run stops it) and is dropped. A team that never ran is left alone (its nested teams
    that ran are moved one by one). Must run inside the loop that will run the team.
    """
    from autogen_core import SingleThreadedAgentRuntime

    if not getattr(team, "_initialized", False):
        for participant in team._participants:
            if _is_team(participant) and needs_reregistration(participant):
                await reregister_participants(participant)
        return
    check_reregistrable(team)
    state = await team.save_state()  # before any swap: nested teams' states are part of it
    for each in _initialized_teams(team):
        # As BaseGroupChat.__init__ builds its embedded runtime.
        each._runtime = SingleThreadedAgentRuntime(ignore_unhandled_exceptions=False)
        each._initialized = False
    await team.load_state(state)  # runs _init: the runtime now holds the current participants


def _is_team(obj: Any) -> bool:
    return hasattr(obj, "_participants") and hasattr(obj, "_initialized")


def _initialized_teams(team: Any) -> list[Any]:
    """The team and every nested team (depth first) whose participants are registered with its runtime."""
    found = [team] if getattr(team, "_initialized", False) else []
    for participant in getattr(team, "_participants", []) or []:
        if _is_team(participant):
            found.extend(_initialized_teams(participant))
    return found


__all__ = ["TESTED_RANGE", "adopt_running_loop", "check_reregistrable", "needs_reregistration",
           "reregister_participants"]
