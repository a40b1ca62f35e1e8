"""AgentChat agents and teams as optimization targets (`opto_core.engine.target.Target`).

AgentChat is async and the target protocol is sync. ``run(example)`` submits the run to the
adapter's one event-loop thread (`opto_adapters.autogen.eventloop.LOOP`) and waits for it:

- it works from plain threads (the loop's evaluation threads) and from code that is itself inside
  a running event loop (the calling thread just blocks while the loop thread runs the agent);
- the user's own ``asyncio.run(team.run(...))`` works before, between and after optimization
  runs, any number of times: a wrapped team's runs (the user's too) and every model call of a
  wrapped agent happen on that one loop, whatever loop awaits them;
- a team the user already ran can be wrapped: its next run registers the wrapped agents with a
  new runtime, keeping the team's state (`opto_adapters.autogen.eventloop.reregister_participants`).

Inside async code, ``await target.arun(example)`` awaits the run without blocking the caller's
loop (one run of a target at a time, whichever loop). Runs of one target are serialized (an
agent's model context is shared by all its calls); runs of different targets proceed concurrently.

The targets are `opto_core.engine.target.BoundTarget`s: ``parameters``/``apply``/``snapshot``/``restore``/
``save_values`` are the core's write-back model over the agents' bindings. A run that fails for a
reason outside the workflow (event loop, connection, this adapter) comes back as its exception,
which `opto_core.engine.executors.error_kind` classifies as infrastructure.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
from typing import Any, AsyncGenerator, AsyncIterator, Callable, Mapping

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage
from autogen_agentchat.teams import BaseGroupChat, SelectorGroupChat
from autogen_core import CancellationToken

from opto_adapters.autogen import _compat
from opto_adapters.autogen.agent import ADAPTER, FRAMEWORK, OptoAgent, _select_output, framework_version, graph_of
from opto_adapters.autogen.eventloop import (
    check_reregistrable,
    mark_loop,
    moved_loop,
    needs_reregistration,
    on_adapter_loop,
    reregister_participants,
    run_sync,
    stream_on_adapter_loop,
)
from opto_adapters.autogen.tracing import RecordingClient, message_record
from opto_core.engine.executors import InfrastructureError, error_kind
from opto_core.engine.target import BoundTarget
from opto_core.kernel.binding import BoundParameters, select
from opto_core.kernel.conversation import ConversationLog
from opto_core.kernel.graph import Graph, run_meta


# ----- examples -> tasks, results -> outputs ---------------------------------------------------
def task_of(example: Any, task_key: str = "task") -> Any:
    """The task an example stands for: a string or message(s) as is, a dict's ``task_key`` field."""
    if isinstance(example, (str, BaseChatMessage)):
        return example
    if isinstance(example, (list, tuple)) and example and all(isinstance(m, BaseChatMessage) for m in example):
        return list(example)
    if isinstance(example, dict):
        if task_key in example:
            return example[task_key]
        raise KeyError(
            f"the example has no {task_key!r} field (its fields: {sorted(example)}); pass "
            f"task_key= to the target to say which field is the task"
        )
    task = getattr(example, task_key, None)  # dspy.Example-like objects
    if isinstance(task, str):
        return task
    raise TypeError(
        f"cannot make a task from a {type(example).__name__}; give a string, a message, or a dict "
        f"with a {task_key!r} field"
    )


def _output_message_id(graph: Graph | None) -> str | None:
    """The framework id of the message the graph marks as its output (the builder's ``output`` node)."""
    if graph is None:
        return None
    outputs = sorted(graph.outputs, key=lambda node: node.name != "output")  # the run's own mark first
    for node in outputs:
        if node.edges:
            message_id = graph[node.edges[0].id].meta.get("message_id")
            if message_id:
                return str(message_id)
    return None


def _output_of(result: TaskResult, graph: Graph | None) -> Any:
    """The text of the output message (the one marked in the graph), else of the last message."""
    wanted = _output_message_id(graph)
    messages = list(result.messages)
    chosen = next((m for m in messages if m.id == wanted), None) if wanted else None
    chosen = chosen or (messages[-1] if messages else None)
    if chosen is None:
        return None
    content = getattr(chosen, "content", None)
    return content if isinstance(content, str) else chosen.to_text()


class _Base(BoundTarget):
    """What agent and team targets share: the lock, the sync/async entry points, graphs, the bound values."""

    framework = FRAMEWORK

    def __init__(self, task_key: str, reset: bool, output: Any, max_graphs: int, before_run: Any) -> None:
        self.task_key = task_key
        self.reset = reset
        self.output = output
        self.before_run = before_run
        self.framework_version = framework_version()
        self.graphs: collections.deque[Graph] = collections.deque(maxlen=max_graphs)
        self._lock = threading.RLock()

    @property
    def last_graph(self) -> Graph | None:
        return self.graphs[-1] if self.graphs else None

    def run(self, example: Any) -> tuple[Any, Graph]:
        """Run one example (blocking, thread-safe); a failure comes back as (exception, graph)."""
        with self._lock:
            return run_sync(self.arun(example))

    async def arun(self, example: Any) -> tuple[Any, Graph]:
        """Run one example on the caller's event loop (for async code, ``executor="asyncio"``).

        Runs of one target take turns, as in `run` (an agent's model context and a team's state
        are shared by all its runs; a team refuses a second concurrent run): an ``asyncio.Lock``
        per event loop, so waiting runs cost no thread.
        """
        loop = asyncio.get_running_loop()
        turns = self.__dict__.get("_turns")
        if turns is None or turns[0] is not loop:
            turns = self._turns = (loop, asyncio.Lock())
        async with turns[1]:
            if self.before_run is not None:
                outcome = self.before_run(example)
                if inspect.isawaitable(outcome):
                    await outcome
            return await self._arun(example)

    async def _arun(self, example: Any) -> tuple[Any, Graph]:
        raise NotImplementedError

    def _agents(self) -> list[OptoAgent]:
        raise NotImplementedError

    def apply(self, updates: dict[str, Any]) -> None:
        """Validate, then write (by parameter name) into the live agents; a failing write undoes all."""
        with self._lock:
            self.bound.apply(updates)

    def snapshot(self) -> Any:
        with self._lock:
            return self.bound.snapshot()

    def restore(self, snapshot: Any) -> None:
        with self._lock:
            self.bound.restore(snapshot)


class AgentTarget(_Base):
    """One agent as a target: each example is a task for a fresh (reset) agent.

    ``agent``: an ``AssistantAgent`` (wrapped here) or an `OptoAgent`. ``output``: which message
    is the output (an agent name, a function of the result's messages, or None for the last one).
    ``reset=False`` keeps the conversation across examples. ``before_run(example)`` (sync or async)
    runs first, e.g. to rewind a replay client. Options for `OptoAgent` pass through.
    """

    def __init__(
        self,
        agent: Any,
        *,
        task_key: str = "task",
        reset: bool = True,
        output: Any = None,
        max_graphs: int = 100,
        before_run: Any = None,
        **agent_options: Any,
    ) -> None:
        super().__init__(task_key, reset, output, max_graphs, before_run)
        if isinstance(agent, OptoAgent):
            self.agent = agent
            include, exclude = agent_options.pop("include", None), agent_options.pop("exclude", None)
            if agent_options:
                raise TypeError(
                    f"{sorted(agent_options)} are options of a new OptoAgent; {agent.name!r} is wrapped "
                    f"already (give include=/exclude= patterns instead)"
                )
            if include is not None or exclude is not None:
                agent.params.freeze_except(select(agent.params.names(), include, exclude))
        else:
            self.agent = OptoAgent(agent, **agent_options)
        self.bound = self.agent.params

    def _agents(self) -> list[OptoAgent]:
        return [self.agent]

    async def _arun(self, example: Any) -> tuple[Any, Graph]:
        task = task_of(example, self.task_key)
        previous = self.agent.last_graph
        result: TaskResult | None = None
        error: Exception | None = None
        try:
            if self.reset:
                await self.agent.on_reset(CancellationToken())
            async for item in self.agent.recorded_stream(task=task, output=self.output):
                if isinstance(item, TaskResult):
                    result = item
        except Exception as exc:
            error = exc
        graph = self.agent.last_graph
        if graph is None or graph is previous:
            return _as_infrastructure(error), _empty_graph(error)
        self.graphs.append(graph)
        if error is not None or result is None:
            return error or InfrastructureError("the agent's stream ended without a TaskResult"), graph
        return _output_of(result, graph), graph


class TeamTarget(_Base):
    """A team (``RoundRobinGroupChat``, ``SelectorGroupChat``, any ``BaseGroupChat``) as a target.

    Built by `wrap_team`: every ``AssistantAgent`` of the team is replaced (in place) by an
    `OptoAgent`, a selector's model client is recorded too, and ``team.run``/``team.run_stream``
    are recorded: each team run is one graph, in ``graphs`` here and in the ``graphs`` of every
    agent that took part.

    ``system_templates={"writer": SYSTEM_TEMPLATE}``: an agent whose system message your code filled
    from a template gets the template as its system parameter (text, or your ``Parameter(...,
    template=True)``); ``template_values(example) -> {"writer": {"company": ...}}`` fills it per run.

    A team that already ran (or was reset) is wrapped too: its runtime still holds the original
    agents, so its next run first registers the wrapped ones and carries the team's whole state
    over (`opto_adapters.autogen.eventloop.reregister_participants`): the conversation so far,
    every agent's model context and the next speaker are kept.
    """

    def __init__(
        self,
        team: Any,
        *,
        task_key: str = "task",
        reset: bool = True,
        output: Any = None,
        max_graphs: int = 100,
        before_run: Any = None,
        include: Any = None,
        exclude: Any = None,
        system_templates: Mapping[str, Any] | None = None,
        template_values: Callable[[Any], Mapping[str, Mapping[str, Any]]] | None = None,
        **agent_options: Any,
    ) -> None:
        if not isinstance(team, BaseGroupChat):
            raise TypeError(
                f"TeamTarget wraps an autogen_agentchat team (BaseGroupChat such as RoundRobinGroupChat "
                f"or SelectorGroupChat), got {type(team).__module__}.{type(team).__name__}"
            )
        if _target_of(team) is not None:
            raise ValueError(f"team {team.name!r} is already wrapped; use wrap_team(team) to get its target")
        check_reregistrable(team)  # a team that ran on a runtime of its own can be wrapped; else a clear error
        super().__init__(task_key, reset, output, max_graphs, before_run)
        self.team = team
        self.agents: dict[str, OptoAgent] = {}
        self.system_templates = dict(system_templates or {})
        self._wrap_participants(team, agent_options)
        if not self.agents:
            raise ValueError(f"team {team.name!r} has no AssistantAgent to wrap")
        unknown = sorted(set(self.system_templates) - set(self.agents))
        if unknown:
            raise ValueError(
                f"system_templates names no wrapped agent: {unknown}; the agents are {sorted(self.agents)}"
            )
        self.template_values = template_values
        # One write-back model over every agent's bindings: a team write is validated and rolled back as one.
        self.bound = BoundParameters(
            [(p, agent.params.binding(p.name)) for agent in self.agents.values() for p in agent.params.parameters()],
            include=include,
            exclude=exclude,
        )
        self._log: ConversationLog | None = None
        self._infrastructure_cause: BaseException | None = None
        self.selector_client: RecordingClient | None = None
        if isinstance(team, SelectorGroupChat):
            self.selector_client = RecordingClient(
                _compat.selector_client(team), agent="selector", session=self._selector_session, role="selector"
            )
            _compat.set_selector_client(team, self.selector_client)
        # Participants replaced after the runtime registered the originals: register again at the next run
        # (it needs the running loop; until then the old registration serves the same inner agents).
        self._reregister = needs_reregistration(team)
        team.run_stream = self._recorded_run_stream  # team.run() calls self.run_stream: recorded too

    def _wrap_participants(self, team: Any, options: dict[str, Any]) -> None:
        members = _compat.participants(team)
        for index, participant in enumerate(members):
            if isinstance(participant, OptoAgent):
                agent = participant
            elif isinstance(participant, AssistantAgent):
                template = self.system_templates.get(participant.name)
                agent = OptoAgent(participant, **options, **({"system_template": template} if template else {}))
                members[index] = agent
            elif isinstance(participant, BaseGroupChat):  # a nested team: its agents join this run's graph
                self._wrap_participants(participant, options)
                continue
            else:
                continue  # user proxies, code executors...: their messages are recorded as inputs
            if agent.name in self.agents:
                raise ValueError(f"two participants are named {agent.name!r}; parameter names would clash")
            self.agents[agent.name] = agent

    def _agents(self) -> list[OptoAgent]:
        return list(self.agents.values())

    def _selector_session(self) -> tuple[ConversationLog, None] | None:
        return (self._log, None) if self._log is not None else None

    def _recorded_run_stream(
        self,
        *,
        task: Any = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> AsyncIterator[Any]:
        """``team.run_stream`` of the wrapped team (``team.run`` calls it): the recorded run, on the
        adapter's loop whichever loop iterates it (the user's own ``asyncio.run`` included)."""
        return stream_on_adapter_loop(
            self._recorded_run(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            )
        )

    async def _recorded_run(
        self, *, task: Any, cancellation_token: CancellationToken | None, output_task_messages: bool
    ) -> AsyncGenerator[Any, None]:
        team = self.team
        # Wrapped after it ran (its runtime must hold the wrapped agents), or last run on another adapter
        # loop (a forked worker process, a stopped loop): register again on a fresh runtime and queue.
        if self._reregister or moved_loop(team):
            self._reregister = False  # a concurrent run meets AgentChat's own "already running" refusal
            try:
                await reregister_participants(team)
            except BaseException:
                self._reregister = True
                raise
        mark_loop(team)
        log = ConversationLog("team", team.name, meta={"team_type": type(team).__name__})
        self._log = log
        for agent in self.agents.values():
            agent.bind(log)
        error: BaseException | None = None
        try:
            async for item in type(team).run_stream(
                team, task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                if isinstance(item, TaskResult):
                    _select_output(log, item, self.output)
                    log.meta["stop_reason"] = item.stop_reason
                elif isinstance(item, BaseChatMessage):  # the task, unwrapped agents' messages
                    record = message_record(item, None)
                    if record is not None:
                        log.add_message(record)
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._log = None
            for agent in self.agents.values():
                agent.bind(None)
            log.finish(error)
            self._infrastructure_cause = _infrastructure_cause(log)
            graph = graph_of(log, {name: agent.params.role_map() for name, agent in self.agents.items()})
            self.graphs.append(graph)
            for turn_agent in {turn.agent for turn in log.turns}:
                if turn_agent in self.agents:
                    self.agents[turn_agent].graphs.append(graph)

    async def _arun(self, example: Any) -> tuple[Any, Graph]:
        task = task_of(example, self.task_key)
        if self.template_values is not None:  # this example's values for the agents' system templates
            for name, values in (self.template_values(example) or {}).items():
                if name not in self.agents:
                    raise KeyError(f"template_values names no agent {name!r}; the agents are {sorted(self.agents)}")
                self.agents[name].params.fill_template(values)
        previous = self.last_graph
        result: TaskResult | None = None
        error: Exception | None = None
        try:
            if self.reset and _compat.registration(self.team)[0]:
                await on_adapter_loop(self.team.reset())
            result = await self.team.run(task=task)
        except Exception as exc:
            error = exc
        graph = self.last_graph
        if graph is None or graph is previous:  # failed before the recorded run began (e.g. in reset)
            return _as_infrastructure(error), _empty_graph(error)
        if error is not None:
            # A team re-raises an agent's failure as a RuntimeError holding only its text; the
            # recorded call keeps the real exception (a connection error, say): report that one.
            cause = self._infrastructure_cause
            return (cause if cause is not None and error_kind(error) != "infrastructure" else error), graph
        return _output_of(result, graph), graph


def _infrastructure_cause(log: ConversationLog) -> BaseException | None:
    """The first recorded model-call or turn error that is infrastructure (connection, event loop, ours)."""
    for error in [call.error for call in log.llm_calls] + [turn.error for turn in log.turns]:
        if error is not None and error_kind(error) == "infrastructure":
            return error
    return None


def _as_infrastructure(error: BaseException | None) -> BaseException:
    """A failure outside the recorded run: the workflow's logic never ran, so it is not feedback on it."""
    if error is None:
        return InfrastructureError("the AutoGen adapter recorded no graph for this run")
    if error_kind(error) == "infrastructure":
        return error
    wrapped = InfrastructureError(f"the AutoGen adapter could not start the run: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _empty_graph(error: BaseException | None) -> Graph:
    """A graph holding only the failure (marked as output), for runs that recorded nothing."""
    graph = Graph()
    graph.meta.update(run_meta(ADAPTER, FRAMEWORK, framework_version()))
    graph.add_exception("autogen.run", _as_infrastructure(error), op_type="run")
    return graph


def wrap_team(team: Any, **options: Any) -> TeamTarget:
    """Wrap every AssistantAgent of a team (in place) and record its runs; returns the `TeamTarget`.

    Calling it again on the same team returns the same target.
    """
    existing = _target_of(team)
    if existing is not None:
        asked = dict(options.get("system_templates") or {})
        if asked and asked != existing.system_templates:
            raise ValueError(
                f"this team was wrapped before (by TeamTarget, wrap_team or apply_values) with "
                f"system_templates={existing.system_templates}; its agents keep that wrapping: build "
                f"the team again to pass system_templates={asked}"
            )
        return existing
    return TeamTarget(team, **options)


def _target_of(team: Any) -> TeamTarget | None:
    """The target that wraps ``team`` (it put its recorded ``run_stream`` on the team), if any."""
    owner = getattr(getattr(team, "run_stream", None), "__self__", None)
    return owner if isinstance(owner, TeamTarget) and owner.team is team else None


def as_target(obj: Any, **options: Any) -> AgentTarget | TeamTarget:
    """An `AgentTarget` for an agent, a `TeamTarget` for a team."""
    if isinstance(obj, (AgentTarget, TeamTarget)):
        return obj
    if isinstance(obj, BaseGroupChat):
        return wrap_team(obj, **options)
    return AgentTarget(obj, **options)


def bound_of(obj: Any) -> BoundParameters:
    """Deprecated: `opto_adapters.autogen.bound_parameters` (the name every adapter has)."""
    import warnings

    from opto_adapters.autogen.parameters import bound_parameters

    warnings.warn(
        "opto_adapters.autogen.bound_of is deprecated; use opto_adapters.autogen.bound_parameters",
        DeprecationWarning,
        stacklevel=2,
    )
    return bound_parameters(obj)


__all__ = ["AgentTarget", "TeamTarget", "as_target", "run_sync", "task_of", "wrap_team"]
