"""From LangChain's run tree to an OPTO graph of real data flow.

The run tree says who called whom; the graph must say which value fed which step. Where
LangChain states the flow, it is read from position tags:

- ``seq:step:N`` (a ``RunnableSequence``): step N's output is step N+1's input;
- ``map:key:K`` (a ``RunnableParallel``): each branch reads the input, the output's key K is
  that branch's result;
- ``condition:N`` / ``branch:N`` / ``branch:default`` (a ``RunnableBranch``): the conditions that
  ran are control parents of the chosen branch;
- ``graph:step:N`` (LangGraph): each node reads the state; state keys are followed to the node
  that last wrote them, and messages to the step that made them.

Inside a step that hides its flow (a lambda, a LangGraph node, a custom chain), the producer of
each value is asked of the core's provenance index (`opto_core.kernel.provenance`, the rules every
adapter shares): an object by identity; a message by its id (``("message", id)``), a tool run by
its ``tool_call_id`` (``("tool_call", id)``: the model that asked for it), a ``ToolMessage`` by
its ``tool_call_id`` (``("tool_result", id)``: the tool that answered); a text (a string, a
message's content, a document's page content) by equality, else as part of a longer text (an
answer or retrieved documents formatted into a prompt). Whatever stays unmatched falls back to
the call tree: the edge gets ``via="call_tree"`` and the node lists it in ``meta["call_tree"]``.

Containers (sequence, parallel, branch, fallbacks, passthrough, assign, a LangGraph graph) become
no node of their own: their children are wired through them. Every other run is an ``op`` node
(``exception`` if it raised), and the parameters a run used (see `links.Links`) are parent
``parameter`` nodes. The builder reads only the records and the links it is given: it can be
fed hand-made ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

import langchain_core
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tracers.schemas import Run

from opto_adapters.langchain.parameters import FRAMEWORK, TAG_KEY
from opto_adapters.langchain.tracing.links import Links
from opto_adapters.langchain.tracing.snapshots import Part, messages_in, parts_of, snapshot, text_of
from opto_core.kernel.graph import (
    META_DURATION,
    META_ERROR,
    META_RUN_ID,
    META_USAGE,
    VIA_CALL_TREE,
    VIA_CONTROL,
    VIA_DATA,
    Edge,
    Graph,
    run_meta,
)
from opto_core.kernel.provenance import ProvenanceIndex

ADAPTER = "opto_adapters.langchain"
#: The argument name of an op's input when the value has no key of its own.
_DEFAULT_ARGS = {"chat_model": "messages", "llm": "prompt", "tool": "args", "retriever": "query"}


@dataclass(slots=True)
class Record:
    """What the handler copied for one run (the run tree itself is LangChain's)."""

    run: Run | None
    raw_in: Any = None
    parts: list[Part] | None = None  # the input's identifiable pieces, taken at the start
    inputs: Any = None
    raw_out: Any = None
    outputs: Any = None
    error: str | None = None
    exception: BaseException | None = None
    adopted: bool = False
    usage: dict[str, int] | None = None
    started: float = 0.0
    ended: float = 0.0


class Ref(NamedTuple):
    """A producer of (part of) a value: its node, the key of the part, how the link was found."""

    id: str
    key: str = ""
    via: str = VIA_DATA
    match: str = ""  # the provenance rule that found it (`opto_core.kernel.provenance.Match.how`), if any


def build_graph(root: Run, records: dict[UUID, Record], links: Links, docs: dict[str, str] | None = None) -> Graph:
    """The OPTO graph of one finished top-level run: its records, the parameters ``links`` names,
    and ``docs`` (run name -> documentation, e.g. a node function's source). The output is marked."""
    return _Builder(root, records, links, docs or {}).build()


def failed_graph(value: Any, exc: BaseException, what: str) -> Graph:
    """The graph of a run that failed before LangChain started it (e.g. preparing its input)."""
    graph = Graph(
        meta=run_meta(ADAPTER, FRAMEWORK, langchain_core.__version__, **{META_ERROR: f"{type(exc).__name__}: {exc}"})
    )
    node = graph.add("input", "input", value, description="the example")
    graph.add_exception(what, exc, parents=[Edge(node.id, "input")])
    return graph


_TAG_KINDS = ("seq:step:", "graph:step:", "map:key:", "condition:", "branch:")


def _position(run: Run) -> dict[str, str]:
    """The position tags of a run: ``{"seq:step": "2", "map:key": "a"}``."""
    position: dict[str, str] = {}
    for tag in run.tags or ():
        for kind in _TAG_KINDS:
            if tag.startswith(kind):
                position.setdefault(kind[:-1], tag[len(kind) :])
                break
    return position


def _metadata(run: Run) -> dict[str, Any]:
    return (run.extra or {}).get("metadata") or {}


class _Builder:
    def __init__(self, root: Run, records: dict[UUID, Record], links: Links, docs: dict[str, str]) -> None:
        self.root = root
        self.records = records
        self.links = links
        self.docs = docs
        self.scope: list[str] = []  # names of the runs being visited (for parameters linked by used_by)
        self.graph = Graph(
            meta=run_meta(
                ADAPTER, FRAMEWORK, langchain_core.__version__, run_name=root.name, **{META_RUN_ID: str(root.id)}
            )
        )
        self.index = ProvenanceIndex(text_of=text_of)  # who produced each value (see the module doc)
        self.consumed: set[str] = set()
        self.routes: list[tuple[str, set[str]]] = []  # LangGraph routing results: node, targets
        self.prompt_tokens = self.completion_tokens = 0
        self.exceptions: list[str] = []
        self.adopted = 0
        self.positions: dict[int, dict[str, str]] = {}  # id(run) -> position tags (UUIDs hash slowly)
        self.by_run: dict[int, Record] = {id(r.run): r for r in records.values() if r.run is not None}

    # ----- helpers ---------------------------------------------------------------------------------
    def pos(self, run: Run) -> dict[str, str]:
        """A run's position tags, parsed once."""
        position = self.positions.get(id(run))
        if position is None:
            position = self.positions[id(run)] = _position(run) if run.tags else {}
        return position

    def tag(self, run: Run, kind: str) -> str | None:
        """A position tag's value (``kind`` is "seq:step", "graph:step", "map:key", "condition", "branch")."""
        return self.pos(run).get(kind)

    def step(self, run: Run, kind: str = "seq:step") -> int | None:
        value = self.pos(run).get(kind)
        return int(value) if value is not None and value.isdigit() else None

    def record(self, run: Run) -> Record:
        record = self.by_run.get(id(run))
        if record is None:
            record = self.records.get(run.id)
        if record is None:  # a run the handler saw no callback for: use what the tracer kept
            outputs = run.outputs or {}
            raw_out = outputs.get("output", outputs)
            record = Record(
                run,
                raw_in=run.inputs,
                inputs=snapshot(run.inputs),
                raw_out=raw_out,
                outputs=snapshot(raw_out),
                error=run.error,
            )
            self.by_run[id(run)] = record
        return record

    def add(self, kind: str, name: str, value: Any, edges: list[Edge], **kwargs: Any) -> str:
        if len(edges) > 1:  # the same value may be found twice (by tag and by id): one edge each
            unique: list[Edge] = []
            seen: set[tuple[str, str]] = set()
            for edge in edges:
                if (edge.id, edge.arg) not in seen:
                    seen.add((edge.id, edge.arg))
                    unique.append(edge)
            edges = unique
        node = self.graph.add(kind, name, value, parents=edges, **kwargs)
        for edge in edges:
            self.consumed.add(edge.id)
        return node.id

    def register(self, raw: Any, node_id: str) -> None:
        """Remember ``raw`` (an op's output or a run input) as produced by ``node_id``, with the ids of
        the messages and tool calls in it."""
        keys: list[tuple[str, str]] = []
        if type(raw) is not str:
            for message in messages_in(raw):
                if message.id:
                    keys.append(("message", message.id))
                if isinstance(message, AIMessage):
                    keys += [("tool_call", call["id"]) for call in message.tool_calls or () if call.get("id")]
                elif isinstance(message, ToolMessage) and message.tool_call_id:
                    keys.append(("tool_result", message.tool_call_id))
        self.index.register(raw, node_id, keys=keys)

    def find_part(self, part: Part) -> str | None:
        """The node that produced one input piece (its ids and text were taken when its run started)."""
        return self.index.node_of(part.obj, text=part.text, keys=_keys(part.message_id, part.tool_call_id))

    @staticmethod
    def edges_from(refs: list[Ref], run: Run) -> list[Edge]:
        default = _DEFAULT_ARGS.get(run.run_type, "input")
        return [Edge(r.id, r.key or default, r.via, r.match) for r in refs]

    # ----- the walk --------------------------------------------------------------------------------
    def build(self) -> Graph:
        root = self.root
        sources = self.root_inputs(root)
        refs = self.visit(root, sources)
        record = self.record(root)
        graph = self.graph
        target: str | None = None
        if record.error is not None:
            # where the error started: the last exception node with the same error (handled ones differ)
            same = [n for n in self.exceptions if self.graph[n].value == record.error]
            target = same[-1] if same else (self.exceptions[-1] if self.exceptions else None)
            if target is None:
                target = self.add(
                    "exception",
                    root.name,
                    record.error,
                    self.edges_from(sources, root),
                    op_type=root.run_type,
                    meta={"run_id": str(root.id)},
                    raw=True,
                )
        elif len(refs) == 1 and not refs[0].key:
            target = refs[0].id
        elif refs:
            target = self.add(
                "op",
                root.name,
                record.outputs,
                [Edge(r.id, r.key or "input", r.via) for r in refs],
                op_type="collect",
                raw=True,
                doc=f"[{root.name}] the run's output, assembled from the values of its steps",
                meta={"run_id": str(root.id)},
            )
        if target is not None:
            graph.mark_output(target, "output")
        meta = graph.meta
        if record.started and record.ended:
            meta[META_DURATION] = round(record.ended - record.started, 6)
        meta[META_USAGE] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.adopted:
            meta["reattached_runs"] = self.adopted
        if record.error is not None:
            meta[META_ERROR] = record.error
        return graph

    def root_inputs(self, root: Run) -> list[Ref]:
        record = self.record(root)
        raw, value = record.raw_in, record.inputs
        if isinstance(raw, dict) and raw and all(isinstance(k, str) for k in raw) and isinstance(value, dict):
            refs = []
            for key, item in raw.items():
                node = self.graph.add("input", key, value.get(key), raw=True, description="an input of the run")
                self.register(item, node.id)
                refs.append(Ref(node.id, key))
            return refs
        node = self.graph.add("input", "input", value, raw=True, description="the input of the run")
        self.register(raw, node.id)
        return [Ref(node.id)]

    @staticmethod
    def children(run: Run) -> list[Run]:
        kids = run.child_runs
        return kids if len(kids) < 2 else sorted(kids, key=lambda r: r.dotted_order or "")

    def classify(self, run: Run) -> str:
        kids = run.child_runs
        if run.run_type != "chain":
            return "op"
        if kids and any("graph:step" in self.pos(c) for c in kids):
            return "langgraph"
        if "graph:step" in self.pos(run):
            return "op"  # a LangGraph node: its function hides the flow
        name = run.name or ""
        if name == "RunnableWithFallbacks":
            return "fallbacks"
        if any(self.record(c).adopted for c in kids):
            return "op"  # re-attached children carry position tags of their old parent
        if name.startswith("RunnableAssign"):
            return "assign"
        if not kids and name == "RunnablePassthrough":
            return "passthrough"
        if not kids and name == "RunnablePick":
            return "pick"
        if kids:
            steps = [self.step(c) for c in kids]
            if all(s is not None for s in steps) and sorted(steps) == list(range(1, len(steps) + 1)):  # type: ignore[type-var]
                return "sequence"
            if all(self.tag(c, "map:key") is not None for c in kids):
                return "parallel"
            if all(self.tag(c, "condition") is not None or self.tag(c, "branch") is not None for c in kids) and any(
                self.tag(c, "branch") is not None for c in kids
            ):
                return "branch"
        return "op"

    def visit(self, run: Run, sources: list[Ref]) -> list[Ref]:
        return getattr(self, "visit_" + self.classify(run))(run, sources)

    def visit_sequence(self, run: Run, sources: list[Ref]) -> list[Ref]:
        current = sources
        for child in sorted(run.child_runs, key=lambda c: self.step(c) or 0):
            current = self.visit(child, current)
            if self.record(child).error is not None:
                break
        return current

    def visit_parallel(self, run: Run, sources: list[Ref]) -> list[Ref]:
        out: list[Ref] = []
        for child in self.children(run):
            key = self.tag(child, "map:key") or child.name
            out += [Ref(r.id, f"{key}.{r.key}" if r.key else key, r.via) for r in self.visit(child, sources)]
        return out

    def visit_branch(self, run: Run, sources: list[Ref]) -> list[Ref]:
        control: list[Ref] = []
        chosen: list[Ref] = []
        for child in self.children(run):
            if self.tag(child, "condition") is not None:
                control += [Ref(r.id, "condition", VIA_CONTROL) for r in self.visit(child, sources)]
            else:
                chosen = self.visit(child, sources + control)
        return chosen

    def visit_fallbacks(self, run: Run, sources: list[Ref]) -> list[Ref]:
        previous: list[Ref] = []
        refs: list[Ref] = []
        for child in self.children(run):
            if self.record(child).adopted:
                self.adopted += 1
            refs = self.visit(child, sources + previous)
            if self.record(child).error is None:
                return refs
            previous = [Ref(r.id, "previous_error", VIA_CONTROL) for r in refs]
        return refs

    def visit_assign(self, run: Run, sources: list[Ref]) -> list[Ref]:
        added: list[Ref] = []
        for child in self.children(run):
            added += self.visit(child, sources)
        keys = {r.key.split(".")[0] for r in added}
        return [r for r in sources if r.key not in keys] + added

    def visit_passthrough(self, run: Run, sources: list[Ref]) -> list[Ref]:
        return [r for r in sources if r.via != VIA_CONTROL]

    def visit_pick(self, run: Run, sources: list[Ref]) -> list[Ref]:
        raw = self.record(run).raw_out
        keys = set(raw) if isinstance(raw, dict) else set()
        picked = [r for r in sources if r.key.split(".")[0] in keys]
        return picked or sources

    # ----- LangGraph ---------------------------------------------------------------------------------
    def visit_langgraph(self, run: Run, sources: list[Ref]) -> list[Ref]:
        writers: dict[str, list[Ref]] = {}
        for ref in sources:
            writers.setdefault(ref.key.split(".")[0] or "input", []).append(ref)
        saved_routes, self.routes = self.routes, []
        for child in self.children(run):
            if self.step(child, "graph:step") is None:
                self.visit(child, sources)  # not a node (rare): wire it to the graph's input
                continue
            record = self.record(child)
            self.claim_input_messages(record, writers, sources)
            node_sources = self.state_refs(record.raw_in, writers, sources, record.parts)
            for router, targets in reversed(self.routes):
                if child.name in targets:
                    node_sources.append(Ref(router, "route", VIA_CONTROL))
                    break
            refs = self.visit(child, node_sources)
            update = record.raw_out
            if isinstance(update, dict):
                for key in update:
                    writers[str(key)] = [Ref(r.id, str(key), r.via) for r in refs]
        self.routes = saved_routes
        return self.state_refs(self.record(run).raw_out, writers, sources)

    def claim_input_messages(self, record: Record, writers: dict[str, list[Ref]], sources: list[Ref]) -> None:
        """Messages in a node's state that no step made, under a key only the graph's input wrote, came
        from the input (LangGraph gives them their ids after the run started): credit them to it, not
        to the first step that passes them on."""
        inputs = {r.id for r in sources}
        parts = record.parts if record.parts is not None else parts_of(record.raw_in)
        for part in parts:
            if not part.message_id or self.index.has_key(("message", part.message_id)):
                continue
            key = part.key.split("[")[0]
            owners = writers.get(key) or []
            if owners and all(r.id in inputs for r in owners):
                self.index.register_key(("message", part.message_id), owners[0].id)

    def state_refs(
        self, state: Any, writers: dict[str, list[Ref]], sources: list[Ref], parts: list[Part] | None = None
    ) -> list[Ref]:
        """Producers of each key of a LangGraph state: messages by id, other keys by last writer."""
        if not isinstance(state, dict):
            return list(sources)
        if parts is None:
            parts = parts_of(state)
        refs: list[Ref] = []
        keys_done: set[str] = set()
        for part in parts:
            key = part.key.split("[")[0]
            node = self.find_part(part) if part.message_id or part.tool_call_id else None
            if node is not None:
                keys_done.add(key)
                if Ref(node, key) not in refs:
                    refs.append(Ref(node, key))
        for key in state:
            key = str(key)
            if key not in keys_done:
                refs += [Ref(r.id, key, r.via) for r in writers.get(key, []) if Ref(r.id, key, r.via) not in refs]
        return refs

    # ----- a step -----------------------------------------------------------------------------------
    def infer_sources(self, child: Run, parent: Run, parent_sources: list[Ref]) -> list[Ref]:
        """What fed a run called from inside a step that hides its flow (a lambda, a node).

        Each input piece is matched to the step that produced it. A piece with no producer was made
        inside the enclosing step: it enters as an ``input`` node holding its value, and the enclosing
        step's own inputs are linked by the call tree (they may be what it was made from).
        """
        record = self.record(child)
        if child.run_type == "tool":
            call_id = (child.extra or {}).get("tool_call_id")
            asked = self.index.by_key(("tool_call", call_id)) if call_id else None
            if asked is not None:
                return [Ref(asked, "tool_call")]
        parts = record.parts if record.parts is not None else parts_of(record.raw_in)
        refs: list[Ref] = []
        unmatched: list[str] = []
        prompts = child.run_type in ("chat_model", "llm") and not self.links.empty
        for part in parts:
            sources = self.links.prompt_sources(part.obj, part.text, self.scope) if prompts else []
            if sources:  # a prompt kept in code (or one of yours, used_by this run)
                refs += [Ref(self.graph.add_parameter(p).id, part.key, VIA_DATA, m.how) for p, m in sources]
                continue
            node = self.find_part(part)
            if node is None:  # the same value the enclosing step received under the same key?
                node = next(
                    (
                        r.id
                        for r in parent_sources
                        if r.key == part.key and r.via != VIA_CONTROL and self.graph[r.id].value == part.value
                    ),
                    None,
                )
                if node is not None:
                    refs.append(Ref(node, part.key))
                    continue
                node = self.graph.add(
                    "input",
                    part.key or "input",
                    part.value,
                    raw=True,
                    description=f"a value made inside {parent.name} (not traced)",
                ).id
                key = part.key.split("[")[0]
                if key not in unmatched:
                    unmatched.append(key)
            if Ref(node, part.key) not in refs:
                refs.append(Ref(node, part.key))
        for key in unmatched:  # hidden flow: the enclosing step's inputs, by the call tree
            keyed = [r for r in parent_sources if key and key != "messages" and r.key.split(".")[0] == key]
            refs += [Ref(r.id, key or r.key, VIA_CALL_TREE) for r in (keyed or parent_sources)]
        return refs

    def visit_op(self, run: Run, sources: list[Ref]) -> list[Ref]:
        record = self.record(run)
        default = _DEFAULT_ARGS.get(run.run_type, "input")
        edges = [Edge(r.id, r.key or default, r.via, r.match) for r in sources]
        in_node = "graph:step" in self.pos(run)
        if run.child_runs:
            produced: list[tuple[Run, list[Ref]]] = []
            self.scope.append(run.name)
            for child in self.children(run):
                child_refs = self.visit(child, self.infer_sources(child, run, sources))
                produced.append((child, child_refs))
                if in_node and (self.step(child) or 1) > 1 and child.run_type == "chain":
                    targets = _route_targets(self.record(child).raw_out)
                    if targets:
                        self.routes.extend((r.id, targets) for r in child_refs)
            self.scope.pop()
            edges += self.child_edges(record, produced, in_node)
        edges += self.parameter_edges(run, record)
        meta: dict[str, Any] = {"run_id": str(run.id), "run_type": run.run_type}
        if in_node:
            metadata = _metadata(run)
            for key in ("langgraph_node", "langgraph_step"):
                if key in metadata:
                    meta[key] = metadata[key]
        call_tree = sorted({e.id for e in edges if e.via == VIA_CALL_TREE})
        if call_tree:
            meta[VIA_CALL_TREE] = call_tree  # the parents found only through the call tree
        if record.adopted:
            meta["reattached"] = True
        if record.usage:
            meta[META_USAGE] = record.usage
            self.prompt_tokens += record.usage.get("prompt_tokens", 0)
            self.completion_tokens += record.usage.get("completion_tokens", 0)
        op_type = "langgraph_node" if in_node else run.run_type
        doc = self.documentation(run, op_type)
        if record.error is not None:
            node_id = self.add(
                "exception", run.name, record.error, edges, op_type=op_type, doc=doc, meta=meta, raw=True
            )
            self.exceptions.append(node_id)
        else:
            node_id = self.add("op", run.name, record.outputs, edges, op_type=op_type, doc=doc, meta=meta, raw=True)
            self.register(record.raw_out, node_id)
        return [Ref(node_id)]

    def child_edges(self, record: Record, produced: list[tuple[Run, list[Ref]]], in_node: bool) -> list[Edge]:
        """Children whose results reach this step's output (data), else the unused ones (call tree).

        A result reaches the output as the very object, by its message id, as the same text, or as
        part of a longer text (documents a retriever found, formatted into a context)."""
        if not produced:
            return []
        routed = {node for node, _ in self.routes}
        output_parts = [record.raw_out, *messages_in(record.raw_out)]
        if isinstance(record.raw_out, dict):
            output_parts += list(record.raw_out.values())
        found_in_output: set[str] = set()
        for part in output_parts:
            keys = _keys(part.id, getattr(part, "tool_call_id", None)) if isinstance(part, BaseMessage) else ()
            found_in_output.update(match.node for match in self.index.find_all(part, keys=keys))
        edges: list[Edge] = []
        for child, refs in produced:
            for ref in refs:
                if ref.id in routed:
                    continue
                if ref.id in found_in_output:
                    edges.append(Edge(ref.id, child.name, VIA_DATA))
                elif ref.id not in self.consumed:
                    edges.append(Edge(ref.id, child.name, VIA_CALL_TREE))
        return edges

    def parameter_edges(self, run: Run, record: Record) -> list[Edge]:
        links = self.links
        if links.empty:
            return []
        edges: list[Edge] = []
        tag = _metadata(run).get(TAG_KEY)
        if isinstance(tag, str):
            for parameter, arg in links.for_tag(tag, run.run_type):
                edges.append(Edge(self.graph.add_parameter(parameter).id, arg))
            if isinstance(record.raw_in, dict):
                links.saw_variables(tag, (k for k in record.raw_in if isinstance(k, str)))
        if run.run_type in ("chat_model", "llm"):
            parts = record.parts if record.parts is not None else parts_of(record.raw_in)
            for part in parts:  # a prompt kept in code (or one of yours) that this call received
                for parameter, match in links.prompt_sources(part.obj, part.text, self.scope):
                    edges.append(
                        Edge(self.graph.add_parameter(parameter).id, part.key or "messages", VIA_DATA, match.how)
                    )
            for name in _offered_tools(run):
                for parameter in links.tool_descriptions(name):
                    edges.append(Edge(self.graph.add_parameter(parameter).id, f"tools[{name}].description"))
        for parameter in links.used_by(run.name):
            edges.append(Edge(self.graph.add_parameter(parameter).id, parameter.name))
        return edges

    # ----- documentation ------------------------------------------------------------------------------
    def documentation(self, run: Run, op_type: str) -> str:
        name = run.name
        if name in self.docs and op_type in ("chain", "langgraph_node"):
            return f"[{name}] Python function:\n{self.docs[name]}"
        group = None
        tag = _metadata(run).get(TAG_KEY)
        if isinstance(tag, str):
            group = self.links.group(tag)
        if op_type == "prompt":
            parameters = [p for p, _ in self.links.for_tag(tag, "prompt")] if isinstance(tag, str) else []
            return f"[{name}] formats the prompt from its templates and the input variables:\n" + _templates(
                run, parameters
            )
        if op_type in ("chat_model", "llm"):
            metadata = _metadata(run)
            params = dict((run.extra or {}).get("invocation_params") or {})
            model = metadata.get("ls_model_name") or params.get("model_name") or params.get("model") or name
            settings = {
                k: v
                for k, v in params.items()
                if k not in ("tools", "_type", "stop", "model", "model_name", "stream", "n")
                and isinstance(v, (int, float, str, bool))
                and v is not None
            }
            text = f"[{name}] calls the language model {model}"
            if settings:
                text += " with " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            tools = _offered_tools(run)
            if tools:
                text += "; tools offered: " + ", ".join(tools)
            return text + ". Its value is the model's reply."
        if op_type == "tool":
            description = (run.serialized or {}).get("description") or ""
            text = f"[{name}] tool: {description}".strip()
            if group is not None:
                for parameter in group.parameters:
                    if parameter.kind == "code":
                        text += f"\nIts code is the parameter {parameter.name}."
            return text
        if op_type == "parser":
            return f"[{name}] parses the model's reply"
        if op_type == "retriever":
            return f"[{name}] retrieves documents for a query"
        if op_type == "langgraph_node":
            metadata = _metadata(run)
            return f"[{name}] LangGraph node (step {metadata.get('langgraph_step', '?')}): reads the graph state, returns an update"
        return f"[{name}] a {run.run_type} step"


def _templates(run: Run, parameters: list[Any]) -> str:
    if parameters:
        return "\n".join(f"{p.name}: {p.value}" for p in parameters)
    kwargs = (run.serialized or {}).get("kwargs") or {}
    lines = []
    if "template" in kwargs:
        lines.append(str(kwargs["template"]))
    for message in kwargs.get("messages") or []:
        inner = ((message or {}).get("kwargs") or {}).get("prompt") or {}
        template = (inner.get("kwargs") or {}).get("template")
        if template is not None:
            role = str((message.get("id") or ["?"])[-1]).replace("MessagePromptTemplate", "").lower()
            lines.append(f"{role}: {template}")
    return "\n".join(lines) or "(templates not available)"


def _keys(message_id: str | None, tool_call_id: str | None) -> list[tuple[str, str]]:
    """The framework ids a consumed message is known by: its own id, and the tool call it answers."""
    keys = [("message", message_id)] if message_id else []
    if tool_call_id:
        keys.append(("tool_result", tool_call_id))
    return keys


def _offered_tools(run: Run) -> list[str]:
    tools = ((run.extra or {}).get("invocation_params") or {}).get("tools") or []
    names = []
    for tool in tools:
        if isinstance(tool, dict):
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else tool.get("name")
            if name:
                names.append(str(name))
    return names


def _route_targets(value: Any) -> set[str] | None:
    """Names a LangGraph routing function returned (a node name, a list of them, or Send objects)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple)) and value:
        names = set()
        for item in value:
            if isinstance(item, str):
                names.add(item)
            elif hasattr(item, "node") and isinstance(item.node, str):
                names.add(item.node)
            else:
                return None
        return names
    if hasattr(value, "node") and isinstance(value.node, str):
        return {value.node}
    return None
