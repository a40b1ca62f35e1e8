"""DSPy call records -> OPTO graphs, one per top-level program call. Imports no DSPy.

The builder is fed the records of `records` in the order DSPy reported the calls (``feed``). A
call whose caller it does not know starts a new run (one graph); the run ends with that call.

Per predictor call the graph holds three ops: ``<p>.format`` (the adapter builds the messages from
the inputs and the instructions, field descriptions and demos, which are its parameter parents),
``<p>.lm`` (the LM call; temperature and max_tokens are its parameter parents) and ``<p>`` (the
parsed output fields). Tools are ops whose parent is the tool's code. A call that raised is an
``exception`` node.

Data flow, which DSPy does not record, is recovered with the core's provenance index
(`opto_core.kernel.provenance`, one set of rules for every adapter): each output field is handed
on as a tagged ``str`` carrying its node id (``feed`` returns the tagged fields, the callback puts
them back into the Prediction; other objects are followed by identity); values that were copied
or embedded in a longer text are matched by value (meta ``inputs`` says how each input was
matched: identity, value, contains, or external). In ``dspy.ReAct``, a tool call's parent is the
``react`` step that chose it, and the formatted trajectory is an op whose parents are all earlier
steps and observations.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

from opto_adapters.dspy.tracing.records import (
    PREDICT,
    REACT,
    CallEnded,
    FormatStarted,
    LMStarted,
    ModuleStarted,
    ParseStarted,
    Record,
    ToolStarted,
)
from opto_core.kernel.graph import META_DURATION, VIA_CALL_TREE, Edge, Graph, run_meta, shorten
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import Match, ProvenanceIndex, Renderer, untag

ADAPTER = "opto_adapters.dspy"
FRAMEWORK = "dspy"
#: ``{owner key: [(stage, arg, Parameter)]}``: the parameters that feed a predictor's prompt
#: (stage ``format``), its LM call (``lm``) or a tool (``tool``). See `ProgramParameters.index`.
ParameterIndex = Mapping[Hashable, list[tuple[str, str, Parameter]]]


def messages_text(messages: Any) -> str:
    """Chat messages (OpenAI-style dicts, text or multimodal content) as one readable text."""
    if not isinstance(messages, list):
        return str(messages)
    parts = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):  # multimodal blocks
                content = "\n".join(str(b.get("text", b)) if isinstance(b, dict) else str(b) for b in content)
            parts.append(f"[{message.get('role', '?')}]\n{content}")
        else:
            parts.append(str(message))
    return "\n\n".join(parts)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Run:
    """One top-level call: its graph and what it takes to find the node behind a value."""

    graph: Graph
    index: ParameterIndex
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    root: str | None = None
    provenance: ProvenanceIndex = field(default_factory=ProvenanceIndex, repr=False)
    react_steps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    last_exception: str | None = None
    last_op: str | None = None
    done: bool = False
    started: float = field(default_factory=time.time)

    # ----- following values (the rules are the core's: `opto_core.kernel.provenance`) ---------------
    def tag(self, value: Any, node_id: str) -> Any:
        """Register ``value`` as produced by ``node_id``; a ``str``, ``int`` or ``float`` comes back tagged.

        A typed value (a number, a bool, a list, a pydantic model: what a typed output field parses
        to) is also known by the texts it is handed on as (``str()``, ``repr``, JSON, DSPy's own
        formatting of a field: the index's renderers), so ``explain(answer=str(a))`` or an f-string
        still finds the predictor that produced ``a``.
        """
        if isinstance(value, str):
            return self.provenance.tag(value, node_id)
        self.provenance.register(value, node_id, typed=True)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.provenance.tag(value, node_id)  # followed by identity while it is passed on as is
        return value

    def resolve(self, value: Any) -> list[Match]:
        """The nodes that produced ``value``; ``Match.how`` is identity, key, value, typed, template, contains
        or partial (`opto_core.kernel.provenance`)."""
        return self.provenance.find_all(value)

    def constant(self, name: str, value: Any, description: str) -> str:
        node = self.graph.add("input", name, value, description=description)
        self.provenance.register(value, node.id, identity=True)  # the very object is passed on, untagged
        return node.id

    def parameter_edges(self, owner: Hashable | None, stage: str) -> list[Edge]:
        if owner is None:
            return []
        return [Edge(self.graph.add_parameter(p).id, arg) for s, arg, p in self.index.get(owner, []) if s == stage]

    def edges_to(self, inputs: Mapping[str, Any], external: str | None) -> tuple[list[Edge], dict[str, str]]:
        """Edges from the producers of each input, and how each was matched. A value no node produced
        becomes a new ``input`` node described as ``external`` (left out when ``external`` is None)."""
        edges: list[Edge] = []
        how: dict[str, str] = {}
        for key, value in inputs.items():
            producers = self.resolve(value)
            if producers:
                edges.extend(Edge(node_id, key) for node_id, _ in producers)
                how[key] = producers[0][1]
            elif external is not None:
                edges.append(Edge(self.constant(key, value, external), key))
                how[key] = "external"
        return edges, how


@dataclass
class Call:
    """A call the builder saw start and not yet end."""

    id: str
    run: Run
    kind: str  # module | predict | react | format | lm | parse | tool
    name: str
    parent: Call | None
    start: Any  # its start record
    input_edges: list[Edge] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)
    format_node: str | None = None
    lm_node: str | None = None
    error_node: str | None = None
    lm_calls: int = 0
    react_count: int = 0
    last_react: str | None = None

    @property
    def owner(self) -> Hashable | None:
        return getattr(self.start, "owner", None)


class GraphBuilder:
    """Builds one OPTO graph per top-level call from the records it is fed (thread-safe).

    ``root_name`` names a top-level module call's node; ``parameter_index`` is called once per run
    (parameters whose values changed are the same objects, refreshed). Finished graphs go to
    ``graphs`` (the last ``keep``).
    """

    def __init__(
        self,
        root_name: str = "program",
        *,
        parameter_index: Callable[[], ParameterIndex] | None = None,
        framework_version: str = "?",
        keep: int | None = 1000,
        renderers: Sequence[Renderer] = (),
    ) -> None:
        self.root_name = root_name
        self.renderers = list(renderers)  # the framework's own texts for a typed value (DSPy's field formatting)
        self.parameter_index = parameter_index
        self.framework_version = framework_version
        self.keep = keep
        self.graphs: list[Graph] = []
        self._calls: dict[str, Call] = {}
        self._lock = threading.Lock()
        self._pending: dict[int, Run] = {}  # thread -> the run `begin` opened for its next top-level call

    # ----- runs -----------------------------------------------------------------------------------
    def new_run(self) -> Run:
        index = self.parameter_index() if self.parameter_index is not None else {}
        meta = run_meta(ADAPTER, FRAMEWORK, self.framework_version, program=self.root_name)
        return Run(Graph(meta=meta), index, provenance=ProvenanceIndex(renderers=self.renderers))

    def begin(self, inputs: Mapping[str, Any]) -> tuple[Run, dict[str, Any]]:
        """Open a run for the next top-level call in this thread; returns it and the traced inputs.

        The example's fields become ``input`` nodes; pass the returned values to the program so
        that the first predictors find them by identity.
        """
        run = self.new_run()
        traced = {}
        for key, value in inputs.items():
            node = run.graph.add("input", key, value, description="a field of the example")
            traced[key] = run.tag(value, node.id)
        run.graph.meta["inputs"] = {k: shorten(str(untag(v)), 300) for k, v in inputs.items()}
        with self._lock:
            self._pending[threading.get_ident()] = run
        return run, traced

    def _root_run(self, inputs: Mapping[str, Any]) -> Run:
        with self._lock:
            run = self._pending.pop(threading.get_ident(), None)
        if run is not None:
            return run
        run = self.new_run()
        for key, value in inputs.items():
            run.constant(key, value, "an input of the program call")
        run.graph.meta["inputs"] = {k: shorten(str(untag(v)), 300) for k, v in inputs.items()}
        return run

    def _finish(self, run: Run) -> None:
        run.done = True
        run.graph.meta[META_DURATION] = round(time.time() - run.started, 4)
        with self._lock:
            self.graphs.append(run.graph)
            if self.keep is not None and len(self.graphs) > self.keep:
                del self.graphs[: len(self.graphs) - self.keep]

    # ----- feeding ----------------------------------------------------------------------------------
    def feed(self, record: Record) -> dict[str, Any] | None:
        """Take one record. For the end of a predictor call, returns its output fields tagged with
        the predictor's node (put them back into the Prediction so later steps are found by identity).

        A record that cannot be built into the graph raises, after noting the error in its run's
        graph (``meta["trace_errors"]``); the run still ends with its top-level call.
        """
        if isinstance(record, CallEnded):
            return self._end(record)
        run = None
        try:
            with self._lock:
                parent = self._calls.get(record.caller_id) if record.caller_id else None
            if isinstance(record, ModuleStarted):
                run = parent.run if parent is not None else self._root_run(record.inputs)
                self._module_started(record, parent, run)
            elif parent is not None:  # an adapter, LM or tool call outside any traced module: not ours
                run = parent.run
                self._child_started(record, parent)
            return None
        except Exception as exc:
            self.note_error(run, exc)
            raise

    @staticmethod
    def note_error(run: Run | None, exc: BaseException) -> None:
        if run is not None:
            run.graph.meta.setdefault("trace_errors", []).append(_error_text(exc))

    def _register(self, call: Call) -> None:
        with self._lock:
            self._calls[call.id] = call

    def _module_started(self, record: ModuleStarted, parent: Call | None, run: Run) -> None:
        if parent is None:
            name = (record.name or self.root_name) if record.kind == PREDICT else self.root_name
        else:
            name = record.name or record.type_name
        call = Call(record.call_id, run, record.kind, name, parent, record)
        if parent is None:
            run.root = call.id
        if record.kind == PREDICT:
            with run.lock:
                self._input_edges(call, record.inputs)
        self._register(call)

    def _child_started(self, record: Any, parent: Call) -> None:
        run = parent.run
        if isinstance(record, ToolStarted):
            call = Call(record.call_id, run, "tool", record.name, parent, record)
            with run.lock:
                if parent.kind == REACT and parent.last_react is not None:
                    call.input_edges.append(Edge(parent.last_react, "next_tool_args"))
                    call.how = dict.fromkeys(record.args, "react")
                else:
                    call.input_edges, call.how = run.edges_to(record.args, f"an argument of the tool {record.name}")
        else:
            kind = {FormatStarted: "format", LMStarted: "lm", ParseStarted: "parse"}[type(record)]
            call = Call(record.call_id, run, kind, f"{parent.name}.{kind}", parent, record)
        self._register(call)

    def _end(self, record: CallEnded) -> dict[str, Any] | None:
        with self._lock:
            call = self._calls.pop(record.call_id, None)
        if call is None:
            return None
        run = call.run
        try:
            with run.lock:
                return getattr(self, f"_{call.kind}_ended")(call, record)
        except Exception as exc:
            self.note_error(run, exc)
            raise
        finally:
            if call.id == run.root and not run.done:
                self._finish(run)

    # ----- data flow --------------------------------------------------------------------------------
    @staticmethod
    def _react_of(call: Call) -> Call | None:
        """The ``dspy.ReAct`` call this predictor belongs to (direct parent, or through ChainOfThought)."""
        parent, hops = call.parent, 0
        while parent is not None and hops < 2:
            if parent.kind == REACT:
                return parent
            parent, hops = parent.parent, hops + 1
        return None

    def _input_edges(self, call: Call, inputs: Mapping[str, Any]) -> None:
        run = call.run
        react = self._react_of(call)
        for key, value in inputs.items():
            if key == "trajectory" and react is not None:
                call.input_edges.append(Edge(self._trajectory(run, react, value), key))
                call.how[key] = "react-trajectory"
                continue
            edges, how = run.edges_to({key: value}, f"a value passed to {call.name} that no traced step produced")
            call.input_edges += edges
            call.how.update(how)

    @staticmethod
    def _trajectory(run: Run, react: Call, value: Any) -> str:
        steps = run.react_steps.get(react.id, [])
        name = f"{react.name}.trajectory"
        if not steps:
            return run.graph.add("input", name, value, description="the ReAct trajectory before the first step").id
        node = run.graph.add(
            "op",
            name,
            value,
            parents=[Edge(node_id, arg) for arg, node_id in steps],
            op_type="dspy.ReAct.trajectory",
            doc=f"[{name}] ReAct writes its past steps (thought, tool name and arguments, "
            "observation) as text for the next step",
        )
        return node.id

    # ----- ends, one per kind of call -------------------------------------------------------------
    def _module_ended(self, call: Call, record: CallEnded) -> None:
        if call.id == call.run.root:
            self._root_ended(call, record, None)

    _react_ended = _module_ended

    def _predict_ended(self, call: Call, record: CallEnded) -> dict[str, Any] | None:
        run, graph, start = call.run, call.run.graph, call.start
        meta = {
            "inputs": dict(call.how),
            "lm_calls": call.lm_calls,
            "module": call.parent.name if call.parent is not None else None,
        }
        tagged: dict[str, Any] | None = None
        if record.error is not None:
            cause = call.error_node or call.lm_node
            parents = [Edge(cause, "error")] if cause else list(call.input_edges)
            node = graph.add(
                "exception",
                call.name,
                _error_text(record.error),
                parents=parents,
                op_type="dspy.Predict",
                doc=f"[{call.name}] dspy.Predict({start.signature})",
                meta=meta,
                raw=True,
            )
            run.last_exception = node.id
        else:
            parents = [Edge(call.lm_node, "completion")] if call.lm_node else list(call.input_edges)
            value = record.fields if record.fields is not None else record.outputs
            node = graph.add(
                "op",
                call.name,
                value,
                parents=parents,
                op_type="dspy.Predict",
                doc=f"[{call.name}] dspy.Predict({start.signature}): parses the LM completion "
                f"into the output fields {', '.join(start.output_fields)}",
                meta=meta,
            )
            run.last_op = node.id
            if record.fields is not None:
                tagged = {key: run.tag(value, node.id) for key, value in record.fields.items()}
            react = self._react_of(call)
            if react is not None and react.start.chooser is not None and react.start.chooser == call.owner:
                run.react_steps.setdefault(react.id, []).append((f"step_{react.react_count}", node.id))
                react.react_count += 1
                react.last_react = node.id
        if call.id == run.root:
            self._root_ended(call, record, node.id)
        return tagged

    def _root_ended(self, call: Call, record: CallEnded, node_id: str | None) -> None:
        run, graph, start = call.run, call.run.graph, call.start
        if call.kind == PREDICT and node_id is not None:
            graph.mark_output(node_id)
            return
        if record.error is not None:
            if run.last_exception is not None:
                parents = [Edge(run.last_exception, "error")]
            elif run.last_op is not None:  # raised in forward() after a traced step: the call tree is all we have
                parents = [Edge(run.last_op, "before", via=VIA_CALL_TREE)]
            else:
                parents = []
            graph.add_exception(
                call.name,
                record.error,
                parents=parents,
                op_type="dspy.Module",
                doc=f"[{call.name}] {start.type_name}.forward",
            )
            return
        if record.fields is not None:
            fields = dict(record.fields)
        elif isinstance(record.outputs, dict):
            fields = dict(record.outputs)
        else:
            fields = {"output": record.outputs}
        edges, how = run.edges_to(fields, None)
        if not edges and run.last_op is not None:
            edges = [Edge(run.last_op, "result", via=VIA_CALL_TREE)]
            how["*"] = VIA_CALL_TREE
        doc = f"[{call.name}] {start.type_name}.forward" + (f": {start.doc}" if start.doc else "")
        node = graph.add(
            "op", call.name, fields, parents=edges, op_type=f"dspy.{start.type_name}", doc=doc, meta={"inputs": how}
        )
        graph.mark_output(node.id)

    def _format_ended(self, call: Call, record: CallEnded) -> None:
        predict, run = call.parent, call.run
        assert predict is not None
        edges = list(predict.input_edges) if predict.kind == PREDICT else []
        edges += run.parameter_edges(predict.owner, "format")
        adapter = call.start.adapter
        doc = (
            f"[{call.name}] {adapter}.format builds the chat messages: the instructions, the field "
            f"descriptions, the demos, then the inputs"
        )
        if record.error is not None:
            node = run.graph.add(
                "exception",
                call.name,
                _error_text(record.error),
                parents=edges,
                op_type=f"dspy.{adapter}.format",
                doc=doc,
                raw=True,
            )
            predict.error_node = node.id
            return
        node = run.graph.add(
            "op", call.name, messages_text(record.outputs), parents=edges, op_type=f"dspy.{adapter}.format", doc=doc
        )
        predict.format_node = node.id

    def _lm_ended(self, call: Call, record: CallEnded) -> None:
        owner, run, start = call.parent, call.run, call.start
        assert owner is not None
        if owner.kind == PREDICT and owner.format_node is not None:
            edges = [Edge(owner.format_node, "messages")]
        else:
            edges = [Edge(run.constant("messages", start.messages, "messages sent to the LM"), "messages")]
        if owner.kind == PREDICT:
            edges += run.parameter_edges(owner.owner, "lm")
        doc = f"[{call.name}] the language model {start.model} (settings {start.settings})"
        meta = {"model": start.model, "settings": dict(start.settings)}
        owner.lm_calls += 1
        if record.error is not None:
            node = run.graph.add(
                "exception",
                call.name,
                _error_text(record.error),
                parents=edges,
                op_type="dspy.LM",
                doc=doc,
                meta=meta,
                raw=True,
            )
            owner.error_node = node.id
            return
        outputs = record.outputs
        value = outputs[0] if isinstance(outputs, list) and len(outputs) == 1 else outputs
        node = run.graph.add("op", call.name, value, parents=edges, op_type="dspy.LM", doc=doc, meta=meta)
        owner.lm_node = node.id
        run.last_op = node.id

    def _parse_ended(self, call: Call, record: CallEnded) -> None:
        if record.error is None:
            return  # a successful parse is part of the predictor's node
        owner, run = call.parent, call.run
        assert owner is not None
        parents = [Edge(owner.lm_node, "completion")] if owner.lm_node else []
        node = run.graph.add(
            "exception",
            call.name,
            _error_text(record.error),
            parents=parents,
            op_type=f"dspy.{call.start.adapter}.parse",
            doc=f"[{call.name}] parses the LM completion into the output fields",
            raw=True,
        )
        owner.error_node = node.id

    def _tool_ended(self, call: Call, record: CallEnded) -> None:
        run, start, react = call.run, call.start, call.parent
        assert react is not None
        edges = list(call.input_edges) + run.parameter_edges(call.owner, "tool")
        doc = f"[{call.name}] {start.desc}".strip()
        meta = {"args": {k: shorten(repr(untag(v)), 300) for k, v in start.args.items()}, "inputs": dict(call.how)}
        if start.source and not any(e.arg == "__code" for e in edges):  # no code parameter: show the source
            doc += "\n" + start.source
        if record.error is not None:
            node = run.graph.add(
                "exception",
                call.name,
                _error_text(record.error),
                parents=edges,
                op_type="dspy.Tool",
                doc=doc,
                meta=meta,
                raw=True,
            )
            if react.kind != REACT:  # ReAct turns it into an observation
                run.last_exception = node.id
        else:
            node = run.graph.add(
                "op", call.name, record.outputs, parents=edges, op_type="dspy.Tool", doc=doc, meta=meta
            )
            run.tag(record.outputs, node.id)
            run.last_op = node.id
        if react.kind == REACT:
            run.react_steps.setdefault(react.id, []).append((f"observation_{max(react.react_count - 1, 0)}", node.id))


__all__ = ["ADAPTER", "FRAMEWORK", "GraphBuilder", "ParameterIndex", "Run", "messages_text"]
