"""One event loop for every AgentChat run the adapter records, and wrapping a team after it ran.

A user runs a team with ``asyncio.run(team.run(task=...))``; the optimizer then runs it from its
threads; afterwards the user runs it again with a new ``asyncio.run``. AgentChat 0.7 ties two
things to the first loop that used them (``shared/notes/autogen.md``, "AgentChat 0.7.5 in a new
event loop"): a team's output queue (an ``asyncio.Queue`` bound to the loop where it first
waited) and an OpenAI model client's HTTP pool (keep-alive connections of a closed loop give
"Event loop is closed"). Plain AgentChat therefore fails on a second ``asyncio.run``.

Rather than moving those objects from loop to loop, the adapter never lets them change loops:
every recorded team run and every model call of a wrapped agent runs on `LOOP`, one event loop
in a daemon thread (`opto_core.engine.background.BackgroundLoop`). The caller's loop awaits the
result without blocking (`on_adapter_loop`, `stream_on_adapter_loop`); synchronous callers block
(`run_sync`). What was bound to a loop before wrapping is renewed once: a team's runtime and
output queue when it registers its wrapped agents again (`reregister_participants`), and an
OpenAI client's HTTP pool, at its first call on the adapter's loop (`renew_http_pool`). The private attributes this takes are in
`opto_adapters.autogen._compat`.
"""

from __future__ import annotations

import asyncio
import warnings
import weakref
from typing import Any, AsyncIterator, TypeVar

from opto_adapters.autogen import _compat
from opto_core.engine.background import BackgroundLoop

T = TypeVar("T")

#: The loop every recorded AgentChat run and every wrapped model call runs on.
LOOP = BackgroundLoop("opto-autogen-loop", "inside async code use `await target.arun(example)`")

#: Kept for callers of earlier versions: the range is `_compat`'s.
TESTED_RANGE = _compat.TESTED_RANGE


def run_sync(coro: Any) -> Any:
    """Run a coroutine on the adapter's loop from synchronous code and return its result (thread-safe)."""
    return LOOP.run(coro)


async def on_adapter_loop(coro: Any) -> Any:
    """Await ``coro`` on the adapter's loop from async code on any loop."""
    return await LOOP.call(coro)


def stream_on_adapter_loop(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate an async generator on the adapter's loop, from async code on any loop."""
    return LOOP.stream(items)


async def renew_http_pool(client: Any) -> None:
    """Give an OpenAI (or Azure OpenAI) model client a new HTTP pool, once, on the adapter's loop.

    The pool may hold keep-alive connections of a loop the user ran the client on before wrapping
    (a closed one, after ``asyncio.run``); from now on the client is only used on the adapter's
    loop. Public seams only: ``close()`` marks the old pool closed (closing sockets of a closed loop
    fails, and is ignored: they are released with the pool), and the client's pickling protocol
    (``__setstate__(__getstate__())``) builds a new pool from its config, keeping usage counters
    and create args. Other clients are left alone. Must run on the adapter's loop.
    """
    if not moved_loop(client, fresh=True) or not _has_http_pool(client):
        return
    async with _renew_lock():  # a client shared by several agents: renewed once, used by none meanwhile
        if not moved_loop(client, fresh=True):
            return
        try:
            await client.close()
        except Exception:  # RuntimeError("Event loop is closed"): the pool is marked closed first
            pass
        client.__setstate__(client.__getstate__())
        mark_loop(client)


def moved_loop(obj: Any, *, fresh: bool = False) -> bool:
    """Whether ``obj`` (a team, a model client) was last prepared for another adapter loop than the one
    running now (a forked worker process, or the loop was stopped and started again). ``fresh``: an
    object never prepared counts as moved too."""
    known = _LOOPS.get(obj)
    if known is None:
        return fresh
    return known() is not asyncio.get_running_loop()


def mark_loop(obj: Any) -> None:
    """Remember that ``obj`` is prepared for the running loop (weakly: neither is kept alive by this)."""
    _LOOPS[obj] = weakref.ref(asyncio.get_running_loop())


def _renew_lock() -> asyncio.Lock:
    """One lock per adapter loop (a lock belongs to the loop it was first used on)."""
    loop = asyncio.get_running_loop()
    lock = _RENEW_LOCKS.get(loop)
    if lock is None:
        lock = _RENEW_LOCKS[loop] = asyncio.Lock()
    return lock


#: Teams and model clients -> the adapter loop they were last prepared for.
_LOOPS: weakref.WeakKeyDictionary[Any, weakref.ref[asyncio.AbstractEventLoop]] = weakref.WeakKeyDictionary()
_RENEW_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _has_http_pool(client: Any) -> bool:
    try:
        from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
    except ImportError:  # autogen-ext without the openai extra: no such client
        return False
    return isinstance(client, BaseOpenAIChatCompletionClient)


def check_reregistrable(team: Any) -> None:
    """Raise a clear error unless `reregister_participants` can move ``team`` (and its nested teams).

    Only a team's own runtime can be replaced: a runtime the user passed (``runtime=``) may host
    other agents, and AgentChat gives no way to unregister the team's agent types.
    """
    for each in _teams(team):
        registered, own_runtime = _compat.registration(each)
        if registered and not own_runtime:
            raise RuntimeError(
                f"team {each.name!r} runs on a runtime you passed (runtime=) and has already run or "
                f"been reset, so its agents are registered there for good; wrap it (wrap_team) "
                f"before its first run or reset"
            )


def needs_reregistration(team: Any) -> bool:
    """True when a team (or a nested team) registered its participants with its own runtime already."""
    return any(all(_compat.registration(each)) for each in _teams(team))


async def reregister_participants(team: Any) -> None:
    """Register a team's *current* participants again, keeping the whole conversation state.

    Call it (on the loop that will run the team) after replacing entries of the participant list
    of a team that already ran. Its state (every participant's state, hence each agent's model
    context; the manager's message thread and next speaker; nested teams included) is saved with
    the public ``save_state()``, each team that registered on its own runtime gets a fresh runtime
    and output queue (`_compat.register_again`), and ``load_state()`` registers the current
    participants and puts the state back. The team object, its name and termination stay.
    """
    if not needs_reregistration(team):
        return
    check_reregistrable(team)
    state = await team.save_state()  # before any swap: nested teams' states are part of it
    for each in _teams(team):
        if all(_compat.registration(each)):
            _compat.register_again(each)
    await team.load_state(state)


def adopt_running_loop(*objects: Any) -> None:
    """Deprecated and no longer needed: wrapped teams and model clients always run on the adapter's loop."""
    warnings.warn(
        "adopt_running_loop is no longer needed (recorded runs and wrapped model calls always run on "
        "the adapter's loop) and does nothing",
        DeprecationWarning,
        stacklevel=2,
    )


def _teams(team: Any) -> list[Any]:
    """The team and every nested team, depth first."""
    from autogen_agentchat.teams import BaseGroupChat

    found = [team]
    for participant in _compat.participants(team):
        if isinstance(participant, BaseGroupChat):
            found.extend(_teams(participant))
    return found


__all__ = [
    "LOOP",
    "TESTED_RANGE",
    "adopt_running_loop",
    "check_reregistrable",
    "mark_loop",
    "moved_loop",
    "needs_reregistration",
    "on_adapter_loop",
    "renew_http_pool",
    "reregister_participants",
    "run_sync",
    "stream_on_adapter_loop",
]
