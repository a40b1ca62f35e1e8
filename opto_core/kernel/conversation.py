"""A recorded multi-agent conversation -> one OPTO graph. Framework-neutral on purpose.

It serves both AutoGen adapters: AgentChat (``opto_adapters.autogen``) and classic AutoGen / AG2
(``opto_adapters.autogen.ag2``), and any other chat framework that can describe what happened as
plain records. Nothing here imports an agent framework: an adapter fills a `ConversationLog` with
turns, messages, LLM calls (with the exact prompt they sent) and tool runs, and `build_graph`
turns it into the shared graph format, with the run metadata every adapter's graphs carry
(`opto_core.kernel.graph.run_meta`: adapter, framework, framework version, run id, duration, usage).

Edges, and why three kinds:

- ``via="data"`` (producer edges): a parameter -> the LLM call that used it; the LLM call -> the
  message it produced; a tool-call request and the tool's code -> the tool run; the tool run ->
  the result/summary message; a message produced earlier *in the same turn by the same agent*
  (its own tool loop) -> that agent's next LLM call; and the results of the agent's own latest
  tool request -> its next LLM call (classic AutoGen runs tools in another agent's turn).
- ``via="context"``: every other message that was in an LLM call's prompt (the task, other
  agents' messages, the agent's own earlier turns). They explain the call but did not produce it.
- ``via="control"``: a speaker-selection call -> the first LLM call of the turn it chose.

Which node produced a prompt message is asked of the core's provenance index
(`opto_core.kernel.provenance`), by framework ids only: the tool-call ids of a request or its results,
else the speaker and the exact content (the latest such message wins: an agent that repeats
itself is answered by its latest turn). No text is matched by length or containment here: a
prompt item is a message the framework passed on, not text assembled from other texts.

A recorder that sees only the wire (the gateway, `opto_core.gateway`) knows two more things, and says
them in the records: a message the program *composed* from earlier messages (an f-string around an
earlier answer: ``MessageRecord.derived_from`` names them) is an op with ``via="data"`` edges from
those messages, and it feeds the call that sent it as data too; and a call whose request showed a
parameter's value lists it in ``LLMCallRecord.parameters`` (role -> `Parameter`, added to its agent's).

``backward(graph, fb)`` follows all of them; ``backward(graph, fb, follow=("data", "call_tree",
"control"))`` credits only the producer chain of the message that got feedback.

The output is marked in the graph (``graph.mark_output``): the message ``log.output_message_id``
(default: the last message), plus an exception node when the run raised.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from opto_core.kernel.graph import (
    MATCH_TEMPLATE,
    META_DURATION,
    META_ERROR,
    META_RUN_ID,
    META_USAGE,
    VIA_CONTEXT,
    VIA_CONTROL,
    VIA_DATA,
    Edge,
    Graph,
    run_meta,
)
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import ProvenanceIndex
from opto_core.kernel.text import as_text, clip

#: Parameter roles an adapter maps its parameters to (``tool_code:<tool>``, ``tool_description:<tool>``,
#: ``setting:<name>`` carry a suffix).
ROLE_SYSTEM = "system"
ROLE_TOOL_CODE = "tool_code:"
ROLE_TOOL_DESCRIPTION = "tool_description:"
ROLE_SETTING = "setting:"
#: A prompt template the agent's calls render (a group chat's speaker-selection prompts): linked to every
#: call of that agent, selector calls included, since its rendered text is not the template's text.
ROLE_PROMPT = "prompt:"

#: Message kinds (a node's name is ``<source>.<kind>``).
KIND_MESSAGE = "message"
KIND_TOOL_REQUEST = "tool_request"
KIND_TOOL_RESULTS = "tool_results"
KIND_TOOL_SUMMARY = "tool_summary"
KIND_THOUGHT = "thought"
KIND_HANDOFF = "handoff"
KIND_MEMORY = "memory"
#: Message types that are events (inner steps of an agent), not messages other agents receive.
EVENT_TYPES = {
    "ToolCallRequestEvent",
    "ToolCallExecutionEvent",
    "ThoughtEvent",
    "MemoryQueryEvent",
    "SelectSpeakerEvent",
    "SelectorEvent",
}
#: Kinds whose producer is the last LLM call of the turn.
_FROM_LLM = {KIND_MESSAGE, KIND_TOOL_REQUEST, KIND_THOUGHT, KIND_HANDOFF}


@dataclass(frozen=True)
class PromptItem:
    """One message of an LLM request, reduced to what matching needs."""

    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    source: str | None = None
    call_ids: tuple[str, ...] = ()


@dataclass
class Turn:
    """One agent handling new messages (one ``on_messages`` call, one AG2 reply)."""

    index: int
    agent: str
    started: float
    ended: float | None = None
    error: BaseException | None = None


@dataclass
class MessageRecord:
    """A message of the conversation. ``turn`` is None for messages from outside any recorded turn
    (the task, an unwrapped agent, a human)."""

    id: str
    source: str
    kind: str
    type: str
    content: str
    turn: int | None = None
    call_ids: tuple[str, ...] = ()
    final: bool = False  # the turn's response (what other agents receive)
    created: float = 0.0
    derived_from: tuple[str, ...] = ()  # ids of earlier messages this one was composed from (by the program)


@dataclass
class LLMCallRecord:
    """One model request and its result (or error), exactly as sent."""

    id: int
    agent: str
    prompt: list[PromptItem]
    tools: list[str]
    settings: dict[str, Any]
    model: str
    turn: int | None  # None for team-level calls (speaker selection)
    role: str = "agent"  # "agent" | "selector"
    output: Any = None  # text, or a list of {"id", "name", "arguments"}
    call_ids: tuple[str, ...] = ()
    usage: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    started: float = 0.0
    seconds: float = 0.0
    verified: list[str] = field(default_factory=list)  # parameter names whose write-back this request showed
    parameters: dict[str, Parameter] = field(
        default_factory=dict
    )  # role -> parameter this call used (on top of its agent's)


@dataclass
class ToolRunRecord:
    """One tool execution: the call it answered, its arguments and its result."""

    agent: str
    turn: int | None
    call_id: str
    name: str
    arguments: str
    result: str
    is_error: bool = False


class ConversationLog:
    """The ordered records of one task run (of one agent or a whole team). Thread-safe appends."""

    def __init__(self, scope: str, name: str, meta: dict[str, Any] | None = None) -> None:
        self.scope = scope  # "agent" | "team" | "turn"
        self.name = name
        self.run_id = uuid.uuid4().hex[:12]
        self.meta: dict[str, Any] = dict(meta or {})
        self.events: list[Any] = []
        self.messages: dict[str, MessageRecord] = {}
        self.turns: list[Turn] = []
        self.llm_calls: list[LLMCallRecord] = []
        self.error: BaseException | None = None
        self.output_message_id: str | None = None  # None: the last message
        self.started = time.time()
        self.ended: float | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        #: Adapter-private memo for this run (e.g. prompt messages already converted), freed with the log.
        self.scratch: dict[Any, Any] = {}

    # ----- recording ------------------------------------------------------------------------
    def begin_turn(self, agent: str) -> Turn:
        with self._lock:
            turn = Turn(len(self.turns), agent, time.time())
            self.turns.append(turn)
            self.events.append(turn)
            return turn

    def end_turn(self, turn: Turn, error: BaseException | None = None) -> None:
        turn.ended = time.time()
        if error is not None and turn.error is None:
            turn.error = error

    def add_message(self, record: MessageRecord) -> bool:
        """Add a message once (by id); a message seen again (delivered to another agent) is ignored."""
        with self._lock:
            if record.id in self.messages:
                return False
            record.created = record.created or time.time()
            self.messages[record.id] = record
            self.events.append(record)
            return True

    def new_llm_call(self, **fields: Any) -> LLMCallRecord:
        with self._lock:
            call = LLMCallRecord(id=next(self._ids), started=time.time(), **fields)
            self.llm_calls.append(call)
            self.events.append(call)
            return call

    def add_tool_run(self, record: ToolRunRecord) -> None:
        with self._lock:
            self.events.append(record)

    def last_message(self) -> MessageRecord | None:
        with self._lock:
            chat = [m for m in self.messages.values() if m.type not in EVENT_TYPES]
            return chat[-1] if chat else None

    def finish(self, error: BaseException | None = None) -> None:
        self.ended = time.time()
        if error is not None:
            self.error = error


# ----- building the graph ---------------------------------------------------------------------
ParamsByAgent = Mapping[str, Mapping[str, Parameter]]


def message_node_id(message_id: str) -> str:
    """The node id of a message: findable from the framework's own message id."""
    return f"msg:{message_id}"


def build_graph(
    log: ConversationLog,
    parameters: ParamsByAgent,
    *,
    adapter: str = "",
    framework: str = "",
    framework_version: str = "",
    meta: dict[str, Any] | None = None,
) -> Graph:
    """Turn a conversation log into an OPTO graph (see the module docstring for the edges).

    ``parameters`` maps agent name -> role -> `Parameter` (roles: ``system``,
    ``tool_code:<tool>``, ``tool_description:<tool>``, ``setting:<name>``). The output is the
    message ``log.output_message_id`` (default: the last message); an error of the run adds an
    exception node (also an output). ``adapter``/``framework``/``framework_version`` go into the
    standard run metadata (`opto_core.kernel.graph.run_meta`); ``meta`` adds (or overrides) keys.
    """
    builder = _Builder(log, parameters)
    graph = builder.build()
    graph.meta.update(run_meta(adapter, framework, framework_version))
    graph.meta.update(_graph_meta(log, builder))
    if meta:
        graph.meta.update(meta)
    return graph


class _Builder:
    def __init__(self, log: ConversationLog, parameters: ParamsByAgent) -> None:
        self.log = log
        self.parameters = parameters
        self.graph = Graph()
        # Producers by framework id (see the module doc). Keys: ("message", id); ("text", source,
        # content); ("calls", kind, sorted call ids); (kind, call id) for requests and results;
        # ("tool_run", call id). All but message ids name slots: the latest producer wins.
        self.index = ProvenanceIndex(text=False)
        self.msg_turn: dict[str, tuple[str, int | None]] = {}  # message node id -> (source, turn), in order
        self.last_own: dict[str, str] = {}  # agent -> node id of its latest message
        self.last_llm: dict[tuple[str, int | None], str] = {}  # (agent, turn) -> last LLM call node id
        self.first_llm_done: set[int] = set()
        self.pending_selector: tuple[str, str] | None = None  # (node id, the text it answered)
        self.prompt_inputs: dict[tuple[str, str | None, str], str] = {}
        self.exception_ids: list[str] = []
        self.composed: set[str] = set()  # message nodes the program composed from earlier messages

    def param_edge(self, agent: str, role: str, arg: str) -> Edge | None:
        parameter = self.parameters.get(agent, {}).get(role)
        if parameter is None:
            return None
        return Edge(self.graph.add_parameter(parameter).id, arg)

    def build(self) -> Graph:
        for event in list(self.log.events):
            if isinstance(event, MessageRecord):
                self.add_message(event)
            elif isinstance(event, LLMCallRecord):
                self.add_llm_call(event)
            elif isinstance(event, ToolRunRecord):
                self.add_tool_run(event)
        self.add_outputs()
        return self.graph

    # -- messages --
    def add_message(self, message: MessageRecord) -> None:
        parents: list[Edge] = []
        if message.turn is not None:
            if message.kind in _FROM_LLM:
                producer = self.last_llm.get((message.source, message.turn))
                if producer is not None:
                    parents.append(Edge(producer, "produced_by"))
            elif message.kind in (KIND_TOOL_RESULTS, KIND_TOOL_SUMMARY):
                for call_id in message.call_ids:
                    run = self.index.by_key(("tool_run", call_id))
                    if run is not None:
                        parents.append(Edge(run, f"call {call_id}"))
        for source_id in message.derived_from:
            source_node = self.index.by_key(("message", source_id))
            if source_node is not None and all(edge.id != source_node for edge in parents):
                parents.append(Edge(source_node, "contains"))
        kind = "op" if parents else "input"
        node = self.graph.add(
            kind,
            f"{message.source}.{message.kind}",
            message.content,
            parents=parents,
            id=message_node_id(message.id),
            op_type=f"message:{message.type}" if kind == "op" else "",
            description=_describe_message(message, bool(parents)),
            meta={
                "message_id": message.id,
                "type": message.type,
                "source": message.source,
                "turn": message.turn,
                "final": message.final,
                **({"call_ids": list(message.call_ids)} if message.call_ids else {}),
            },
        )
        if message.derived_from and parents:
            self.composed.add(node.id)
        index = self.index
        index.register_key(("message", message.id), node.id)
        self.msg_turn[node.id] = (message.source, message.turn)
        index.register_key(("text", message.source, message.content), node.id, latest=True)
        self.last_own[message.source] = node.id
        if message.call_ids:
            index.register_key(("calls", message.kind, tuple(sorted(message.call_ids))), node.id, latest=True)
            if message.kind in (KIND_TOOL_REQUEST, KIND_TOOL_RESULTS):
                for call_id in message.call_ids:
                    index.register_key((message.kind, call_id), node.id, latest=True)

    # -- LLM calls --
    def add_llm_call(self, call: LLMCallRecord) -> None:
        parents: list[Edge] = []
        unmatched = 0
        system_checked = False
        msg_turn, node_of, by_key = self.msg_turn, self.index.node_of, self.index.by_key
        agent, this_turn = call.agent, call.turn
        roles = (
            {**self.parameters.get(agent, {}), **call.parameters} if call.parameters else self.parameters.get(agent, {})
        )
        composed = self.composed
        for position, item in enumerate(call.prompt):  # the hot loop of a long conversation: kept lean
            if position == 0 and item.role == "system" and call.role == "agent":
                system_checked = True
                param = roles.get(ROLE_SYSTEM)
                how = _system_source(param, item.content) if param is not None else None
                if how is not None:
                    parents.append(Edge(self.graph.add_parameter(param).id, "system_message", VIA_DATA, how))
                    continue
            node_id = (
                node_of(None, keys=self.keys(item)) if item.call_ids else by_key(("text", item.source, item.content))
            )
            arg = _PROMPT_ARGS[position] if position < len(_PROMPT_ARGS) else f"prompt[{position}]"
            if node_id is None:
                unmatched += 1
                parents.append(Edge(self.prompt_input(agent, item), arg, VIA_CONTEXT))
                continue
            source, turn = msg_turn[node_id]
            own_turn = this_turn is not None and turn == this_turn and source == agent
            if not own_turn and item.role == "tool" and item.call_ids:
                own_turn = by_key((KIND_TOOL_REQUEST, item.call_ids[0])) == self.last_own.get(
                    agent
                )  # results of its request
            parents.append(Edge(node_id, arg, VIA_DATA if own_turn or node_id in composed else VIA_CONTEXT))
        if not system_checked and call.role == "agent":
            param = roles.get(ROLE_SYSTEM)
            if param is not None and param.value == "":  # an agent without a system message
                parents.append(Edge(self.graph.add_parameter(param).id, "system_message"))
        for name in call.tools:
            described = roles.get(ROLE_TOOL_DESCRIPTION + name)
            if described is not None:
                parents.append(Edge(self.graph.add_parameter(described).id, f"tool {name}"))
        for role, parameter in roles.items():
            if role.startswith(ROLE_SETTING):
                parents.append(Edge(self.graph.add_parameter(parameter).id, role[len(ROLE_SETTING) :]))
            elif role.startswith(ROLE_PROMPT):
                parents.append(Edge(self.graph.add_parameter(parameter).id, role[len(ROLE_PROMPT) :]))
        if call.role == "selector":
            # The selector's prompt is a rendered template of the whole transcript: link every chat message.
            seen = {edge.id for edge in parents}
            for node_id in self.msg_turn:
                if node_id not in seen and self.graph[node_id].meta.get("type") not in EVENT_TYPES:
                    parents.append(Edge(node_id, "history", VIA_CONTEXT))
        elif call.turn is not None and call.turn not in self.first_llm_done:
            self.first_llm_done.add(call.turn)
            if self.pending_selector is not None and call.agent in self.pending_selector[1]:
                parents.append(Edge(self.pending_selector[0], "selected_by", VIA_CONTROL))
            self.pending_selector = None
        name = f"{call.agent}.llm"
        meta = {
            "turn": call.turn,
            "role": call.role,
            "model": call.model,
            "settings": call.settings,
            "tools": list(call.tools),
            META_USAGE: call.usage,
            "seconds": round(call.seconds, 6),
            "prompt_messages": len(call.prompt),
            "prompt_unmatched": unmatched,
        }
        if call.verified:
            meta["write_back_verified"] = list(call.verified)
        doc = _llm_doc(call)
        if call.error is not None:
            node = self.graph.add_exception(name, call.error, parents=parents, op_type="llm_call", doc=doc, meta=meta)
            self.exception_ids.append(node.id)
        else:
            node = self.graph.add(
                "op",
                name,
                call.output,
                parents=parents,
                op_type="llm_call",
                doc=doc,
                meta=meta,
                description=f"LLM call of {call.agent}",
            )
        if call.role == "selector":
            self.pending_selector = (node.id, text_of(call.output))
        else:
            self.last_llm[(call.agent, call.turn)] = node.id

    @staticmethod
    def keys(item: PromptItem) -> list[tuple[Any, ...]]:
        """The ids a prompt item with tool calls is known by, strongest first: the request (or results)
        message of exactly these calls, the message one call came in (a message that answered several
        calls, sent back one result at a time), then the speaker and content."""
        kind = KIND_TOOL_RESULTS if item.role == "tool" else KIND_TOOL_REQUEST
        keys: list[tuple[Any, ...]] = [("calls", kind, tuple(sorted(item.call_ids)))]
        if len(item.call_ids) == 1:
            keys.append((kind, item.call_ids[0]))
        keys.append(("text", item.source, item.content))
        return keys

    def prompt_input(self, agent: str, item: PromptItem) -> str:
        key = (item.role, item.source, item.content)
        node_id = self.prompt_inputs.get(key)
        if node_id is None:
            node = self.graph.add(
                "input",
                f"{agent}.prompt_{item.role}",
                item.content,
                description="a prompt message no recorded message accounts for "
                "(memory, a handoff context, a changed context)",
                meta={"role": item.role, "source": item.source},
            )
            node_id = self.prompt_inputs[key] = node.id
        return node_id

    # -- tools --
    def add_tool_run(self, run: ToolRunRecord) -> None:
        parents: list[Edge] = []
        request = self.index.by_key((KIND_TOOL_REQUEST, run.call_id))
        if request is not None:
            parents.append(Edge(request, "arguments"))
        code = self.param_edge(run.agent, ROLE_TOOL_CODE + run.name, "code")
        if code is not None:
            parents.append(code)
        description = self.parameters.get(run.agent, {}).get(ROLE_TOOL_DESCRIPTION + run.name)
        node = self.graph.add(
            "op",
            f"{run.agent}.tool.{run.name}",
            run.result,
            parents=parents,
            op_type="tool",
            doc=f"tool {run.name}: {description.value}" if description is not None else f"tool {run.name}",
            description=f"{run.name}({clip(run.arguments, 80)})",
            meta={"call_id": run.call_id, "arguments": run.arguments, "is_error": run.is_error, "turn": run.turn},
        )
        self.index.register_key(("tool_run", run.call_id), node.id, latest=True)

    # -- outputs --
    def add_outputs(self) -> None:
        log = self.log
        output_id = log.output_message_id
        output = self.index.by_key(("message", output_id)) if output_id is not None else None
        if output is None and log.error is None:
            last = log.last_message()
            output = self.index.by_key(("message", last.id)) if last is not None else None
        if output is not None:
            self.graph.mark_output(output, "output")
        if log.error is not None and not self.exception_ids:
            # The run failed outside an LLM call (a tool raised past the framework, a termination
            # condition, a cancelled task): attach the error to the last thing that happened.
            nodes = [node for node in self.graph.nodes if node.kind in ("op", "input")]
            parents = [Edge(nodes[-1].id, "after")] if nodes else []
            node = self.graph.add_exception(f"{log.name}.error", log.error, parents=parents, op_type="run")
            self.exception_ids.append(node.id)


_PROMPT_ARGS = tuple(f"prompt[{i}]" for i in range(512))


def _system_source(parameter: Parameter, content: Any) -> str | None:
    """How an agent's system-message parameter produced the system message a call sent, or ``None``.

    Its exact text (``""``: no matching needed), or, for a template parameter (``template=``: the
    program fills it in each run), an output of its current value (`Template.match`, ``"template"``).
    """
    if parameter.value == content:
        return ""
    current = parameter.current_template()
    if current is None or not isinstance(content, str):
        return None
    return MATCH_TEMPLATE if current.match(content) is not None else None


def _describe_message(message: MessageRecord, produced: bool) -> str:
    if not produced:
        where = "the task" if message.source == "user" else f"a message from {message.source}"
        return f"{where} (not produced by a recorded agent)"
    return f"{message.type} from {message.source}"


def _llm_doc(call: LLMCallRecord) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in sorted(call.settings.items())) or "client defaults"
    tools = ", ".join(call.tools) or "none"
    if call.role == "selector":
        return f"speaker selection by model {call.model} ({settings}): picks the next agent"
    return f"chat model {call.model} ({settings}) answering as {call.agent}; tools offered: {tools}"


def _graph_meta(log: ConversationLog, builder: _Builder) -> dict[str, Any]:
    prompt = sum(c.usage.get("prompt_tokens", 0) for c in log.llm_calls)
    completion = sum(c.usage.get("completion_tokens", 0) for c in log.llm_calls)
    verified = sorted({name for c in log.llm_calls for name in c.verified})
    meta: dict[str, Any] = {
        "scope": log.scope,
        "name": log.name,
        META_RUN_ID: log.run_id,
        "started": log.started,
        META_DURATION: round((log.ended or time.time()) - log.started, 6),
        "agents": sorted({t.agent for t in log.turns}),
        "turns": len(log.turns),
        "llm_calls": len(log.llm_calls),
        "messages": len(log.messages),
        META_USAGE: {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    if verified:
        meta["write_back_verified"] = verified
    if log.error is not None:
        meta[META_ERROR] = f"{type(log.error).__name__}: {log.error}"
    meta.update(log.meta)
    return meta


def mark_message(graph: Graph, message_id: str, name: str | None = None) -> str:
    """Mark one message (by its framework id) as an output, so that feedback can be given on it.

    Returns the node id to key the feedback with: ``backward(graph, {node_id: feedback})``.
    """
    node_id = message_id if message_id in graph else message_node_id(message_id)
    if node_id not in graph:
        known = [n.meta.get("message_id") for n in graph.nodes if n.meta.get("message_id")]
        raise KeyError(f"no message with id {message_id!r} in this graph; its messages are {known}")
    graph.mark_output(node_id, name)
    return node_id


def text_of(value: Any) -> str:
    """A JSON-ish text for anything that is not already a string (tool calls, structured content)."""
    return as_text(value, default=str)
