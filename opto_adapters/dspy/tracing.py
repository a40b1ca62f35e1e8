"""DSPy runs as OPTO graphs, recorded through DSPy's own callback system.

`DSPyTracer` is a ``dspy.utils.callback.BaseCallback``. DSPy calls its start handlers *before*
it sets the active call id, so ``ACTIVE_CALL_ID`` read there is the caller's id: that gives
the call tree, also in ``ParallelExecutor`` threads (which carry the id over). A call whose
caller is unknown to the tracer starts a new run, so one tracer gives one graph per top-level
program call (one per example under ``dspy.Evaluate``, whatever the number of threads).

Per ``dspy.Predict`` call the graph holds three ops: ``<p>.format`` (the adapter builds the
messages from the inputs and the instructions, field descriptions and demos, which are its
parameter parents), ``<p>.lm`` (the LM call; temperature and max_tokens are its parameter
parents) and ``<p>`` (the parsed output fields). Tools are ops whose parent is the tool's code.

Data flow, which DSPy does not record, is recovered with the core's provenance index
(`opto_core.kernel.provenance`, one set of rules for every adapter): each output field is handed on
as a tagged ``str`` carrying its node id (other objects are followed by identity); values that
were copied or embedded in a longer text are matched by value (meta ``inputs`` says how each
input was matched: identity, value, contains, or external). In ``dspy.ReAct``, a tool call's parent is
the ``react`` step that chose it, and the formatted trajectory is an op whose parents are all
earlier steps and observations.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils.callback import ACTIVE_CALL_ID, BaseCallback

from opto_core.kernel.code import SourceUnavailable, function_source
from opto_core.kernel.graph import META_DURATION, Edge, Graph, run_meta, shorten
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import Match, ProvenanceIndex, TaggedStr, tagged_node, untag

from opto_adapters.dspy.parameters import ProgramParameters, module_path, sub_modules

log = logging.getLogger("opto.dspy")

_RUN_IDS = itertools.count(1)
ADAPTER = "opto_adapters.dspy"

#: Kept for callers of earlier versions: the tagged ``str`` is the core's.
TracedStr = TaggedStr


def untag_prediction(prediction: Any) -> Any:
    """Replace tagged values in a Prediction's fields by plain ones (in place); returns it."""
    if isinstance(prediction, dspy.Example):
        for key, value in prediction.items():
            if tagged_node(value) is not None:
                prediction[key] = untag(value)
    return prediction


def _messages_text(messages: Any) -> str:
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


def _signature_text(signature: Any) -> str:
    try:
        return signature.signature  # "question -> answer"
    except AttributeError:
        return str(signature)


@dataclass
class _Run:
    """One top-level call: its graph and what it takes to find the node behind a value."""

    graph: Graph
    index: dict[int, list[tuple[str, str, Parameter]]]
    root_name: str
    id: int = field(default_factory=lambda: next(_RUN_IDS))
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    root: str | None = None
    provenance: ProvenanceIndex = field(default_factory=ProvenanceIndex, repr=False)
    react_steps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    last_exception: str | None = None
    last_op: str | None = None
    done: bool = False
    started: float = field(default_factory=time.time)

    # ----- following values (the rules are the core's: `opto_core.kernel.provenance`) --------------------
    def tag(self, value: Any, node_id: str) -> Any:
        """Register ``value`` as produced by ``node_id``; a ``str`` comes back tagged (other values as they are)."""
        if isinstance(value, str):
            return self.provenance.tag(value, node_id)
        self.provenance.register(value, node_id)
        return value

    def resolve(self, value: Any) -> list[Match]:
        """The nodes that produced ``value``; ``Match.how`` is identity, value or contains."""
        return self.provenance.find_all(value)

    def constant(self, name: str, value: Any, description: str) -> str:
        node = self.graph.add("input", name, value, description=description)
        self.provenance.register(value, node.id, identity=True)  # the very object is passed on, untagged
        return node.id

    def parameter_edges(self, owner: Any, stage: str) -> list[Edge]:
        return [Edge(self.graph.add_parameter(p).id, arg) for s, arg, p in self.index.get(id(owner), []) if s == stage]


def node_names(program: Any, parameters: ProgramParameters | None) -> dict[int, str]:
    """``{id(module, predictor or tool): name}`` for naming graph nodes (the root has none)."""
    names: dict[int, str] = {}
    if program is not None:
        for path, module in sub_modules(program):
            if path != "self":
                names[id(module)] = module_path(path)
    if parameters is not None:
        names.update(parameters.names_by_id())
    return names


@dataclass
class _Call:
    """One DSPy call the tracer saw start (module, predictor, adapter format, LM, tool)."""

    id: str
    run: _Run
    kind: str  # module | predict | format | lm | parse | tool
    instance: Any
    parent: "_Call | None"
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_edges: list[Edge] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)
    format_node: str | None = None
    lm_node: str | None = None
    error_node: str | None = None
    lm_calls: int = 0
    react_count: int = 0
    last_react: str | None = None


class DSPyTracer(BaseCallback):
    """Records DSPy runs as OPTO graphs (``tracer.graphs``, one per top-level call).

    Use it like any DSPy callback: ``dspy.configure(callbacks=[DSPyTracer(program)])`` or
    ``with dspy.context(callbacks=[tracer]): ...``. Given the ``program`` (or its
    `ProgramParameters`), nodes get the predictors' names and the parameter nodes that fed them.
    """

    def __init__(self, program: Any = None, *, parameters: ProgramParameters | None = None,
                 name: str | None = None, keep: int | None = 1000, names: dict[int, str] | None = None) -> None:
        if parameters is None and program is not None:
            parameters = ProgramParameters(program)
        self.parameters = parameters
        program = program if program is not None else (parameters.program if parameters else None)
        self.root_name = name or (type(program).__name__ if program is not None else "program")
        self._names = dict(names) if names is not None else node_names(program, parameters)
        self.keep = keep
        self.graphs: list[Graph] = []
        self.errors: list[str] = []
        self._calls: dict[str, _Call] = {}
        self._lock = threading.Lock()
        self._pending: _Run | None = None
        self._pending_owner: int | None = None

    # ----- runs ---------------------------------------------------------------------------------------
    def _new_run(self) -> _Run:
        index = self.parameters.index() if self.parameters is not None else {}
        graph = Graph(meta=run_meta(ADAPTER, "dspy", getattr(dspy, "__version__", "?"), program=self.root_name))
        return _Run(graph, index, self.root_name)

    def begin(self, inputs: dict[str, Any]) -> tuple[_Run, dict[str, Any]]:
        """Start a run for the next top-level call in this thread; returns it and the traced inputs.

        The example's fields become ``input`` nodes; pass the returned values to the program so
        that the first predictors find them by identity.
        """
        run = self._new_run()
        traced = {}
        for key, value in inputs.items():
            node = run.graph.add("input", key, value, description="a field of the example")
            traced[key] = run.tag(value, node.id)
        run.graph.meta["inputs"] = {k: shorten(str(untag(v)), 300) for k, v in inputs.items()}
        with self._lock:
            self._pending, self._pending_owner = run, threading.get_ident()
        return run, traced

    def _root_run(self, instance: Any, kwargs: dict[str, Any]) -> _Run:
        with self._lock:
            if self._pending is not None and self._pending_owner == threading.get_ident():
                run, self._pending = self._pending, None
                return run
        run = self._new_run()
        for key, value in kwargs.items():
            run.constant(key, value, "an input of the program call")
        run.graph.meta["inputs"] = {k: shorten(str(untag(v)), 300) for k, v in kwargs.items()}
        return run

    def _finish(self, run: _Run) -> None:
        run.done = True
        run.graph.meta[META_DURATION] = round(time.time() - run.started, 4)
        with self._lock:
            self.graphs.append(run.graph)
            if self.keep is not None and len(self.graphs) > self.keep:
                del self.graphs[: len(self.graphs) - self.keep]

    # ----- helpers -----------------------------------------------------------------------------------
    def _parent(self) -> _Call | None:
        parent_id = ACTIVE_CALL_ID.get()
        return self._calls.get(parent_id) if parent_id else None

    def _register(self, call: _Call) -> None:
        with self._lock:
            self._calls[call.id] = call

    def _pop(self, call_id: str) -> _Call | None:
        with self._lock:
            return self._calls.pop(call_id, None)

    def _name(self, instance: Any, parent: _Call | None) -> str:
        if parent is None:
            return self.root_name
        return self._names.get(id(instance)) or type(instance).__name__

    def _error(self, run: _Run | None, where: str, exc: BaseException) -> None:
        message = f"{where}: {type(exc).__name__}: {exc}"
        log.warning("opto DSPy tracer: %s", message)
        self.errors.append(message)
        if run is not None:
            run.graph.meta.setdefault("trace_errors", []).append(message)

    @staticmethod
    def _bound(instance: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        args, kwargs = tuple(inputs.get("args") or ()), dict(inputs.get("kwargs") or {})
        if not args:
            return kwargs
        try:
            bound = inspect.signature(instance.forward).bind_partial(*args, **kwargs).arguments
        except (TypeError, ValueError):
            return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        result: dict[str, Any] = {}
        for key, value in bound.items():
            if isinstance(value, dict) and key not in kwargs and key == "kwargs":
                result.update(value)
            elif isinstance(value, tuple) and key == "args":
                result.update({f"arg{i}": a for i, a in enumerate(value)})
            else:
                result[key] = value
        return result

    @staticmethod
    def _react_of(call: _Call) -> _Call | None:
        """The ``dspy.ReAct`` call this predictor belongs to (direct parent, or through ChainOfThought)."""
        parent, hops = call.parent, 0
        while parent is not None and hops < 2:
            if isinstance(parent.instance, dspy.ReAct):
                return parent
            parent, hops = parent.parent, hops + 1
        return None

    def _input_edges(self, call: _Call) -> None:
        run = call.run
        react = self._react_of(call)
        for key, value in call.kwargs.items():
            if key == "trajectory" and react is not None:
                call.input_edges.append(Edge(self._trajectory(run, react, value), key))
                call.how[key] = "react-trajectory"
                continue
            producers = run.resolve(value)
            if producers:
                call.input_edges.extend(Edge(node_id, key) for node_id, _ in producers)
                call.how[key] = producers[0][1]
            else:
                node_id = run.constant(key, value, f"a value passed to {call.name} that no traced step produced")
                call.input_edges.append(Edge(node_id, key))
                call.how[key] = "external"

    def _trajectory(self, run: _Run, react: _Call, value: Any) -> str:
        steps = run.react_steps.get(react.id, [])
        name = f"{react.name}.trajectory"
        if not steps:
            return run.graph.add("input", name, value, description="the ReAct trajectory before the first step").id
        node = run.graph.add("op", name, value, parents=[Edge(node_id, arg) for arg, node_id in steps],
                             op_type="dspy.ReAct.trajectory",
                             doc=f"[{name}] ReAct writes its past steps (thought, tool name and arguments, "
                                 "observation) as text for the next step")
        return node.id

    # ----- modules and predictors --------------------------------------------------------------------
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        run = None
        try:
            parent = self._parent()
            kwargs = self._bound(instance, inputs)
            run = parent.run if parent is not None else self._root_run(instance, kwargs)
            kind = "predict" if isinstance(instance, dspy.Predict) else "module"
            call = _Call(call_id, run, kind, instance, parent, self._name(instance, parent), kwargs)
            if parent is None:
                run.root = call_id
                if kind == "predict" and instance is not None:
                    call.name = self._names.get(id(instance), self.root_name)
            if kind == "predict":
                with run.lock:
                    self._input_edges(call)
            self._register(call)
        except Exception as exc:  # noqa: BLE001 - tracing must never break the program
            self._error(run, "on_module_start", exc)

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._pop(call_id)
        if call is None:
            return
        run = call.run
        try:
            with run.lock:
                node_id = self._predict_end(call, outputs, exception) if call.kind == "predict" else None
                if call.id == run.root:
                    self._root_end(call, outputs, exception, node_id)
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_module_end", exc)
        finally:
            if call.id == run.root and not run.done:
                self._finish(run)

    def _predict_end(self, call: _Call, outputs: Any, exception: BaseException | None) -> str:
        run, graph = call.run, call.run.graph
        signature = getattr(call.instance, "signature", None)
        meta = {"inputs": dict(call.how), "lm_calls": call.lm_calls,
                "module": call.parent.name if call.parent is not None else None}
        if exception is not None:
            parents = [Edge(call.error_node or call.lm_node, "error")] if (call.error_node or call.lm_node) \
                else list(call.input_edges)
            node = graph.add("exception", call.name, f"{type(exception).__name__}: {exception}", parents=parents,
                             op_type="dspy.Predict", doc=f"[{call.name}] dspy.Predict({_signature_text(signature)})",
                             meta=meta, raw=True)
            run.last_exception = node.id
            return node.id
        parents = [Edge(call.lm_node, "completion")] if call.lm_node else list(call.input_edges)
        fields = dict(outputs.items()) if isinstance(outputs, dspy.Example) else outputs
        output_names = list(getattr(signature, "output_fields", {}) or [])
        node = graph.add("op", call.name, fields, parents=parents, op_type="dspy.Predict",
                         doc=f"[{call.name}] dspy.Predict({_signature_text(signature)}): parses the LM completion "
                             f"into the output fields {', '.join(output_names)}", meta=meta)
        run.last_op = node.id
        if isinstance(outputs, dspy.Example):
            for key, value in list(outputs.items()):
                outputs[key] = run.tag(value, node.id)
        react = self._react_of(call)
        if react is not None and getattr(react.instance, "react", None) is call.instance:
            run.react_steps.setdefault(react.id, []).append((f"step_{react.react_count}", node.id))
            react.react_count += 1
            react.last_react = node.id
        return node.id

    def _root_end(self, call: _Call, outputs: Any, exception: BaseException | None, node_id: str | None) -> None:
        run, graph = call.run, call.run.graph
        if exception is not None:
            if call.kind == "predict" and node_id is not None:
                graph.mark_output(node_id)
                return
            if run.last_exception is not None:
                parents = [Edge(run.last_exception, "error")]
            elif run.last_op is not None:  # raised in forward() after a traced step: the call tree is all we have
                parents = [Edge(run.last_op, "before", via="call_tree")]
            else:
                parents = []
            graph.add_exception(call.name, exception, parents=parents, op_type="dspy.Module",
                                doc=f"[{call.name}] {type(call.instance).__name__}.forward")
            return
        if call.kind == "predict":
            graph.mark_output(node_id)
            return
        if isinstance(outputs, dspy.Example):
            fields = dict(outputs.items())
        elif isinstance(outputs, dict):
            fields = dict(outputs)
        else:
            fields = {"output": outputs}
        edges: list[Edge] = []
        how: dict[str, str] = {}
        for key, value in fields.items():
            producers = run.resolve(value)
            if producers:
                edges.extend(Edge(n, key) for n, _ in producers)
                how[key] = producers[0][1]
        if not edges and run.last_op is not None:
            edges = [Edge(run.last_op, "result", via="call_tree")]
            how["*"] = "call_tree"
        doc = inspect.cleandoc(type(call.instance).__dict__.get("__doc__") or "").split("\n\n")[0]
        node = graph.add("op", call.name, fields, parents=edges, op_type=f"dspy.{type(call.instance).__name__}",
                         doc=f"[{call.name}] {type(call.instance).__name__}.forward" + (f": {doc}" if doc else ""),
                         meta={"inputs": how})
        graph.mark_output(node.id)

    # ----- adapter and LM ----------------------------------------------------------------------------
    def _child(self, call_id: str, kind: str, instance: Any, inputs: dict[str, Any]) -> None:
        parent = self._parent()
        if parent is None:
            return
        name = f"{parent.name}.{kind}"
        self._register(_Call(call_id, parent.run, kind, instance, parent, name, dict(inputs)))

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        try:
            self._child(call_id, "format", instance, {})
        except Exception as exc:  # noqa: BLE001
            self._error(None, "on_adapter_format_start", exc)

    def on_adapter_format_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._pop(call_id)
        if call is None:
            return
        predict, run = call.parent, call.run
        try:
            with run.lock:
                edges = list(predict.input_edges) if predict.kind == "predict" else []
                edges += run.parameter_edges(predict.instance, "format")
                adapter = type(call.instance).__name__
                doc = (f"[{call.name}] {adapter}.format builds the chat messages: the instructions, the field "
                       f"descriptions, the demos, then the inputs")
                if exception is not None:
                    node = run.graph.add("exception", call.name, f"{type(exception).__name__}: {exception}",
                                         parents=edges, op_type=f"dspy.{adapter}.format", doc=doc, raw=True)
                    predict.error_node = node.id
                    return
                node = run.graph.add("op", call.name, _messages_text(outputs), parents=edges,
                                     op_type=f"dspy.{adapter}.format", doc=doc)
                predict.format_node = node.id
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_adapter_format_end", exc)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        try:
            self._child(call_id, "lm", instance, inputs)
        except Exception as exc:  # noqa: BLE001
            self._error(None, "on_lm_start", exc)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._pop(call_id)
        if call is None:
            return
        owner, run = call.parent, call.run
        try:
            with run.lock:
                settings = {k: v for k, v in {**getattr(call.instance, "kwargs", {}),
                                              **(call.kwargs.get("kwargs") or {})}.items()
                            if k not in ("api_key", "api_base", "base_url")}
                model = getattr(call.instance, "model", type(call.instance).__name__)
                if owner.kind == "predict" and owner.format_node is not None:
                    edges = [Edge(owner.format_node, "messages")]
                else:
                    messages = call.kwargs.get("messages") or call.kwargs.get("prompt")
                    edges = [Edge(run.constant("messages", _messages_text(messages), "messages sent to the LM"),
                                  "messages")]
                if owner.kind == "predict":
                    edges += run.parameter_edges(owner.instance, "lm")
                doc = f"[{call.name}] the language model {model} (settings {settings})"
                meta = {"model": str(model), "settings": settings}
                owner.lm_calls += 1
                if exception is not None:
                    node = run.graph.add("exception", call.name, f"{type(exception).__name__}: {exception}",
                                         parents=edges, op_type="dspy.LM", doc=doc, meta=meta, raw=True)
                    owner.error_node = node.id
                    return
                value = outputs[0] if isinstance(outputs, list) and len(outputs) == 1 else outputs
                node = run.graph.add("op", call.name, value, parents=edges, op_type="dspy.LM", doc=doc, meta=meta)
                owner.lm_node = node.id
                run.last_op = node.id
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_lm_end", exc)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        try:
            self._child(call_id, "parse", instance, {})
        except Exception as exc:  # noqa: BLE001
            self._error(None, "on_adapter_parse_start", exc)

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._pop(call_id)
        if call is None or exception is None:
            return  # a successful parse is part of the predictor's node
        owner, run = call.parent, call.run
        try:
            with run.lock:
                parents = [Edge(owner.lm_node, "completion")] if owner.lm_node else []
                node = run.graph.add("exception", call.name, f"{type(exception).__name__}: {exception}",
                                     parents=parents, op_type=f"dspy.{type(call.instance).__name__}.parse",
                                     doc=f"[{call.name}] parses the LM completion into the output fields", raw=True)
                owner.error_node = node.id
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_adapter_parse_end", exc)

    # ----- tools -------------------------------------------------------------------------------------
    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        parent = self._parent()
        if parent is None:
            return
        run = parent.run
        try:
            kwargs = dict(inputs.get("kwargs") or {})
            name = getattr(instance, "name", None) or type(instance).__name__
            call = _Call(call_id, run, "tool", instance, parent, name, kwargs)
            with run.lock:
                if isinstance(parent.instance, dspy.ReAct) and parent.last_react is not None:
                    call.input_edges.append(Edge(parent.last_react, "next_tool_args"))
                    call.how = {k: "react" for k in kwargs}
                else:
                    for key, value in kwargs.items():
                        producers = run.resolve(value)
                        if producers:
                            call.input_edges.extend(Edge(n, key) for n, _ in producers)
                            call.how[key] = producers[0][1]
                        else:
                            call.input_edges.append(Edge(run.constant(key, value, f"an argument of the tool {name}"),
                                                         key))
                            call.how[key] = "external"
            self._register(call)
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_tool_start", exc)

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._pop(call_id)
        if call is None:
            return
        run = call.run
        try:
            with run.lock:
                edges = list(call.input_edges) + run.parameter_edges(call.instance, "tool")
                desc = getattr(call.instance, "desc", "") or ""
                doc = f"[{call.name}] {desc}".strip()
                meta = {"args": {k: shorten(repr(untag(v)), 300) for k, v in call.kwargs.items()},
                        "inputs": dict(call.how)}
                if not any(e.arg == "__code" for e in edges):  # no code parameter: show the source as doc
                    try:
                        doc += "\n" + function_source(getattr(call.instance, "func", None))
                    except (SourceUnavailable, TypeError, AttributeError):
                        pass
                if exception is not None:
                    node = run.graph.add("exception", call.name, f"{type(exception).__name__}: {exception}",
                                         parents=edges, op_type="dspy.Tool", doc=doc, meta=meta, raw=True)
                    if not isinstance(call.parent.instance, dspy.ReAct):  # ReAct turns it into an observation
                        run.last_exception = node.id
                else:
                    node = run.graph.add("op", call.name, outputs, parents=edges, op_type="dspy.Tool", doc=doc,
                                         meta=meta)
                    run.tag(outputs, node.id)
                    run.last_op = node.id
                react = call.parent
                if isinstance(react.instance, dspy.ReAct):
                    run.react_steps.setdefault(react.id, []).append(
                        (f"observation_{max(react.react_count - 1, 0)}", node.id))
        except Exception as exc:  # noqa: BLE001
            self._error(run, "on_tool_end", exc)
