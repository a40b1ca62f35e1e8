"""`OptoAgent`: an AgentChat agent that records its conversations as OPTO graphs.

``OptoAgent(assistant)`` is a ``BaseChatAgent`` that delegates every call to the wrapped
``AssistantAgent`` (same name, description, message types, state), so it goes wherever an agent
goes: ``run``/``run_stream``, ``on_messages``/``on_messages_stream``, ``on_reset``,
``save_state``/``load_state``, ``RoundRobinGroupChat``, ``SelectorGroupChat``. On top it installs a
`RecordingClient` in front of the assistant's model client and observes each turn, so that every
task run yields one graph (``agent.graphs``, ``agent.last_graph``), and it owns the assistant's
parameters (``agent.parameters()``, ``agent.apply``, ``agent.snapshot``/``restore``).

A run of the agent itself (``run``/``run_stream``) is one graph. In a team, wrap the team with
`opto_adapters.autogen.wrap_team` so that a team run is one graph shared by its agents; an
OptoAgent in a team that is not wrapped records one graph per turn (and warns once).
"""

from __future__ import annotations

import collections
import functools
import warnings
import weakref
from typing import Any, AsyncGenerator, Mapping, Sequence

from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_core import CancellationToken

from opto_adapters.autogen import _compat
from opto_adapters.autogen.parameters import AgentParameters
from opto_adapters.autogen.tracing import RecordingClient, TurnObserver
from opto_core.kernel.conversation import ConversationLog, Turn, build_graph, mark_message
from opto_core.kernel.graph import Graph, shorten
from opto_core.kernel.parameters import Parameter

#: The graph vocabulary (`opto_core.kernel.graph.run_meta`): who recorded the graph, with which framework.
ADAPTER = "opto_adapters.autogen"
FRAMEWORK = "autogen-agentchat"


@functools.lru_cache(maxsize=1)
def framework_version() -> str:
    try:
        from importlib.metadata import version

        return version(FRAMEWORK)
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def graph_of(log: ConversationLog, parameters: Mapping[str, Mapping[str, Parameter]]) -> Graph:
    """The conversation builder with this adapter's run metadata."""
    return build_graph(log, parameters, adapter=ADAPTER, framework=FRAMEWORK, framework_version=framework_version())


#: AssistantAgent -> the OptoAgent wrapping it (weak: neither is kept alive by this table).
_WRAPPERS: weakref.WeakKeyDictionary[Any, OptoAgent] = weakref.WeakKeyDictionary()


def wrapper_of(agent: Any) -> OptoAgent | None:
    """The `OptoAgent` that wraps ``agent`` (an ``AssistantAgent``), if any."""
    return _WRAPPERS.get(agent)


def check_agent(agent: Any) -> None:
    """Raise a clear TypeError unless ``agent`` is an AgentChat ``AssistantAgent`` OptoAgent can wrap."""
    if isinstance(agent, OptoAgent):
        raise TypeError(f"agent {agent.name!r} is already an OptoAgent; wrap the AssistantAgent only once")
    if isinstance(agent, AssistantAgent):
        if wrapper_of(agent) is not None:
            raise TypeError(
                f"AssistantAgent {agent.name!r} is already wrapped by another OptoAgent "
                f"(its model client is recorded); use that OptoAgent"
            )
        return
    kind = type(agent)
    module = getattr(kind, "__module__", "") or ""
    if module.startswith("autogen.") or module == "autogen" or hasattr(agent, "register_reply"):
        raise TypeError(
            f"{kind.__name__} looks like a classic AG2 (autogen 0.2/0.14) agent; OptoAgent wraps "
            f"autogen-agentchat 0.7 AssistantAgent (what `pip install pyautogen` installs). "
            f"For classic AG2 use opto_adapters.autogen.ag2.AG2Target."
        )
    if isinstance(agent, BaseChatAgent):
        raise TypeError(
            f"OptoAgent wraps an AssistantAgent (an agent with a model client); {agent.name!r} is a "
            f"{kind.__name__}, which has no model calls to record. Leave it unwrapped; a team "
            f"wrapped with wrap_team records its messages as inputs."
        )
    raise TypeError(
        f"OptoAgent wraps an autogen_agentchat.agents.AssistantAgent, got {kind.__module__}."
        f"{kind.__name__} ({shorten(repr(agent), 80)})"
    )


class OptoAgent(BaseChatAgent):
    """Wraps an ``AssistantAgent``: behaves like it, records each task run as an OPTO graph.

    Which parameters are trainable: ``include``/``exclude`` (names or globs, the core's rule:
    excluded parameters stay visible, frozen), and the older switches ``system_message``,
    ``tool_code``, ``tool_descriptions``, ``temperature`` (False freezes that kind). ``max_graphs`` bounds
    ``graphs`` (the oldest are dropped). ``system_template``: the template your code filled the system
    message from (``SYSTEM.format(company=...)``), as text or a ``Parameter(..., template=True)`` of yours:
    it becomes the system parameter (``<agent>.system_template``, or your Parameter's name), keeps its
    placeholders, and a new template is filled with the values the current message holds. One OptoAgent runs one conversation at a time, like
    the AssistantAgent it wraps (whose model context is shared by all its calls).
    """

    def __init__(
        self,
        agent: Any,
        *,
        system_message: bool = True,
        tool_code: bool = True,
        tool_descriptions: bool = True,
        temperature: bool = True,
        include: Any = None,
        exclude: Any = None,
        max_graphs: int = 100,
        system_template: Any = None,
    ) -> None:
        check_agent(agent)
        super().__init__(agent.name, agent.description)
        self._agent: AssistantAgent = agent
        self._original_client = _compat.model_client(agent)
        self.params = AgentParameters(
            agent,
            system_message=system_message,
            tool_code=tool_code,
            tool_descriptions=tool_descriptions,
            temperature=temperature,
            include=include,
            exclude=exclude,
            client=self._original_client,
            system_template=system_template,
        )
        self._client = RecordingClient(
            self._original_client, agent=agent.name, session=self._session, parameters=self.params
        )
        _compat.set_model_client(agent, self._client)
        _WRAPPERS[agent] = self
        self.graphs: collections.deque[Graph] = collections.deque(maxlen=max_graphs)
        self._bound: ConversationLog | None = None  # the conversation this agent's turns belong to
        self._active: tuple[ConversationLog, Turn] | None = None  # the turn in progress
        self._warned_unbound = False

    # ----- what the wrapped agent is --------------------------------------------------------
    @property
    def agent(self) -> AssistantAgent:
        """The wrapped AssistantAgent (its model client is the recording client while wrapped)."""
        return self._agent

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return self._agent.produced_message_types

    @property
    def model_context(self) -> Any:
        return self._agent.model_context

    @property
    def last_graph(self) -> Graph | None:
        """The graph of the latest task run this agent took part in (None before the first)."""
        return self.graphs[-1] if self.graphs else None

    def __getattr__(self, name: str) -> Any:
        # Public attributes of the wrapped agent (e.g. ones a subclass adds) read through.
        inner = self.__dict__.get("_agent")
        if name.startswith("_") or inner is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"OptoAgent({self._agent.name!r}, graphs={len(self.graphs)})"

    # ----- parameters -------------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """This agent's parameters with their current values."""
        return self.params.parameters()

    def apply(self, updates: dict[str, Any], **options: Any) -> dict[str, Any]:
        """Write values into the wrapped agent: the core's `BoundParameters.apply` (validated first,
        rolled back on a failing write, returns what was written); the next request is checked."""
        return self.params.apply(updates, **options)

    def snapshot(self) -> dict[str, Any]:
        """The core's snapshot of every parameter (exact undo, see `restore`)."""
        return self.params.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.params.restore(snapshot)

    def unwrap(self) -> AssistantAgent:
        """Give the AssistantAgent its own model client back and return it (it keeps current values)."""
        _compat.set_model_client(self._agent, self._original_client)
        _WRAPPERS.pop(self._agent, None)
        return self._agent

    def dump_component(self) -> Any:
        """The wrapped agent's declarative config, with the current (optimized) values and real client."""
        return self._agent.dump_component()

    # ----- recording --------------------------------------------------------------------------
    def _session(self) -> tuple[ConversationLog, Turn] | None:
        return self._active

    def bind(self, log: ConversationLog | None) -> None:
        """Attach this agent's next turns to a conversation (a team run); None detaches."""
        self._bound = log

    def _params_map(self) -> dict[str, dict[str, Parameter]]:
        return {self.name: self.params.role_map()}

    def _finish(self, log: ConversationLog, error: BaseException | None) -> Graph:
        log.finish(error)
        graph = graph_of(log, self._params_map())
        self.graphs.append(graph)
        return graph

    async def _record_turn(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        log, owned = self._bound, False
        if log is None:
            owned = True
            log = ConversationLog("turn", self.name)
            if not self._warned_unbound:
                self._warned_unbound = True
                warnings.warn(
                    f"OptoAgent {self.name!r} is running outside a recorded run (a team not wrapped with "
                    f"wrap_team?): each turn becomes its own graph",
                    stacklevel=3,
                )
        turn = log.begin_turn(self.name)
        observer = TurnObserver(log, self.name, turn)
        observer.incoming(messages)
        previous, self._active = self._active, (log, turn)
        error: BaseException | None = None
        try:
            async for item in self._agent.on_messages_stream(messages, cancellation_token):
                observer.observe(item)
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._active = previous
            log.end_turn(turn, error)
            if owned:
                self._finish(log, error)

    # ----- the ChatAgent interface ------------------------------------------------------------
    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        response: Response | None = None
        async for item in self.on_messages_stream(messages, cancellation_token):  # to the end: the turn is
            if isinstance(item, Response):  # recorded when the stream closes
                response = item
        if response is None:
            raise AssertionError("the wrapped agent's stream ended without a Response")
        return response

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        async for item in self._record_turn(messages, cancellation_token):
            yield item

    async def run(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> TaskResult:
        result: TaskResult | None = None
        async for item in self.run_stream(
            task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
        ):
            if isinstance(item, TaskResult):
                result = item
        assert result is not None, "run_stream ended without a TaskResult"
        return result

    async def run_stream(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        """As ``AssistantAgent.run_stream``; the run becomes one graph (``last_graph``)."""
        async for item in self.recorded_stream(
            task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
        ):
            yield item

    async def recorded_stream(
        self,
        *,
        task: Any = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
        output: Any = None,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        """``run_stream`` with a choice of output: ``output(messages) -> message`` marks that message
        (default: the last one) as the graph's output."""
        if self._bound is not None:  # e.g. run() of an agent inside a running, wrapped team
            async for item in super().run_stream(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                yield item
            return
        log = ConversationLog("agent", self.name)
        self._bound = log
        error: BaseException | None = None
        try:
            async for item in super().run_stream(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                if isinstance(item, TaskResult):
                    _select_output(log, item, output)
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._bound = None
            self._finish(log, error)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        await self._agent.on_reset(cancellation_token)

    async def on_pause(self, cancellation_token: CancellationToken) -> None:
        await self._agent.on_pause(cancellation_token)

    async def on_resume(self, cancellation_token: CancellationToken) -> None:
        await self._agent.on_resume(cancellation_token)

    async def save_state(self) -> Mapping[str, Any]:
        """The wrapped agent's state (interchangeable with an unwrapped AssistantAgent's)."""
        return await self._agent.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self._agent.load_state(state)

    async def close(self) -> None:
        await self._agent.close()

    # ----- feedback on a specific message -----------------------------------------------------
    def mark_message(
        self, message: BaseChatMessage | BaseAgentEvent | str, graph: Graph | None = None, name: str | None = None
    ) -> str:
        """Mark one message of a graph (default: the last graph) as an output; returns the node id to
        give feedback on: ``backward(graph, {node_id: feedback})``."""
        graph = graph or self.last_graph
        if graph is None:
            raise ValueError(f"agent {self.name!r} has not run yet: there is no graph to mark")
        return mark_message(graph, message if isinstance(message, str) else message.id, name)


def _select_output(log: ConversationLog, result: TaskResult, output: Any) -> None:
    """Set the log's output message: ``output(messages)`` if given, else the result's last message."""
    messages = list(result.messages)
    chosen = None
    if callable(output):
        chosen = output(messages)
    elif isinstance(output, str):  # an agent name: its last message
        chosen = next(
            (m for m in reversed(messages) if getattr(m, "source", None) == output and isinstance(m, BaseChatMessage)),
            None,
        )
        if chosen is None:
            raise ValueError(f"no message from {output!r} in the run's result")
    else:
        chosen = messages[-1] if messages else None
    if chosen is not None:
        log.output_message_id = chosen.id  # the builder marks its node as the graph's output
