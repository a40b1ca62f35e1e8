"""`ChainTarget`: a LangChain runnable or compiled LangGraph graph as a target of the shared loop.

``optimize(ChainTarget(chain), trainset, feedback_fn, OptoPrime(...))`` runs each example through
the chain with an `OptoCallbackHandler`, hands the loop the output and its graph, and writes
accepted values back into the live prompt, model and tool objects (with undo).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence
from uuid import uuid4

from opto_core.graph import Edge, Graph
from opto_core.parameters import Parameter

from .handler import OptoCallbackHandler
from .parameters import (NoParametersFound, apply_values, function_docs, load_state, parameters_of, refresh,
                         save_state)


class ChainTarget:
    """Runs a runnable traced, and reads/writes its parameters (the `opto_core.target.Target` protocol).

    - ``parameters``: `Parameter`s to optimize (default: `parameters_of(runnable, include, exclude)`).
      Your own `Parameter` objects may be mixed in; one with ``meta={"used_by": "node_name"}`` is
      linked to the runs of that name (e.g. a LangGraph node whose function reads ``param.value``).
    - What the chain receives from an example: ``prepare(example)`` if given; else
      ``example[input_key]``; else, for a dict example, the keys in ``input_keys`` or, by default,
      the keys the runnable's input schema declares (so labels such as ``"answer"`` never reach the
      chain or the trace); anything else is passed as it is.
    - ``output_fn(output)`` turns the chain's output into what the feedback function scores
      (e.g. the last message's text of a LangGraph state); it appears in the graph as one more op.
    - ``config``: extra `RunnableConfig` for every run (tags, metadata, ``configurable``...).
    """

    def __init__(self, runnable: Any, parameters: Sequence[Parameter] | None = None, *,
                 include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 input_key: str | None = None, input_keys: Sequence[str] | None = None,
                 prepare: Callable[[Any], Any] | None = None, output_fn: Callable[[Any], Any] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        if not hasattr(runnable, "invoke"):
            raise TypeError(f"ChainTarget needs a LangChain runnable (with .invoke), got {type(runnable).__name__}")
        self.runnable = runnable
        if parameters is None:
            parameters = parameters_of(runnable, include=include, exclude=exclude)
        self._parameters = list(parameters)
        for parameter in self._parameters:
            if not isinstance(parameter, Parameter):
                raise TypeError(f"parameters must be opto_core Parameter objects, got {type(parameter).__name__}")
        names = [p.name for p in self._parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique, repeated: {duplicates}")
        if not any(p.trainable for p in self._parameters):
            raise NoParametersFound(f"none of the parameters given is trainable: {names}")
        self.input_key = input_key
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.prepare = prepare
        self.output_fn = output_fn
        self.config = dict(config or {})
        self._schema_keys: list[str] | None | bool = False  # False: not computed yet
        self.docs = function_docs(runnable)

    # ----- the Target protocol ------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        return refresh(self._parameters)

    def apply(self, updates: dict[str, Any]) -> None:
        """Validate and write values into the live objects; on any failure nothing is changed."""
        apply_values(self._parameters, updates)

    def snapshot(self) -> Any:
        return save_state(self._parameters)

    def restore(self, snapshot: Any) -> None:
        load_state(self._parameters, snapshot)

    def run(self, example: Any) -> tuple[Any, Graph]:
        """Run one example; a chain that raises gives ``(exception, graph with its exception node)``."""
        handler = self.handler()
        run_id = uuid4()
        try:
            chain_input = self.input_of(example)
        except Exception as exc:
            return exc, _failed_graph(example, exc, "preparing the chain's input")
        callbacks = self.config.get("callbacks")
        if callbacks is None:
            callbacks = [handler]
        elif isinstance(callbacks, (list, tuple)):
            callbacks = [*callbacks, handler]
        else:  # a callback manager
            callbacks = callbacks.copy()
            callbacks.add_handler(handler, inherit=True)
        config = {**self.config, "callbacks": callbacks, "run_id": run_id}
        try:
            output = self.runnable.invoke(chain_input, config)
        except Exception as exc:
            graph = handler.graph_for(run_id)
            if graph is None:
                return exc, _failed_graph(chain_input, exc, "running the chain")
            _mark(graph)
            return exc, graph
        graph = handler.graph_for(run_id)
        if graph is None:
            raise RuntimeError(f"the run left no graph: {'; '.join(handler.errors) or 'no callback reached the handler'}")
        if self.output_fn is not None:
            try:
                output = self.output_fn(output)
            except Exception as exc:
                node = graph.meta.pop("output_node", None)
                graph.add_exception("output_fn", exc, parents=[Edge(node, "output")] if node else [], op_type="python")
                return exc, graph
            _mark(graph, output)
        else:
            _mark(graph)
        return output, graph

    # ----- helpers --------------------------------------------------------------------------------
    def handler(self) -> OptoCallbackHandler:
        """A fresh handler for one run (runs in several threads never share state)."""
        return OptoCallbackHandler(self._parameters, max_graphs=1, mark_output=False, docs=self.docs)

    def input_of(self, example: Any) -> Any:
        if self.prepare is not None:
            return self.prepare(example)
        if self.input_key is not None:
            try:
                return example[self.input_key]
            except (KeyError, TypeError, IndexError):
                raise KeyError(f"the example has no field {self.input_key!r} (input_key): {example!r:.200}") from None
        if not isinstance(example, dict):
            return example
        keys = self.input_keys if self.input_keys is not None else self.schema_keys()
        if not keys:
            return dict(example)
        missing = [k for k in keys if k not in example and self.input_keys is not None]
        if missing:
            raise KeyError(f"the example lacks the input field(s) {missing}; it has {sorted(example)}")
        return {k: example[k] for k in keys if k in example}

    def schema_keys(self) -> list[str] | None:
        """The fields the runnable's input schema declares (None when it declares none)."""
        if self._schema_keys is False:
            try:
                schema = self.runnable.get_input_jsonschema()
                properties = schema.get("properties") if isinstance(schema, dict) else None
                self._schema_keys = list(properties) if properties else None
            except Exception:
                self._schema_keys = None
        return self._schema_keys  # type: ignore[return-value]


_NOTHING = object()


def _mark(graph: Graph, transformed: Any = _NOTHING) -> None:
    """Mark the run's result as the output (after ``output_fn``, when one was applied)."""
    node = graph.meta.pop("output_node", None)
    if node is None:
        return
    if transformed is not _NOTHING:
        node = graph.add("op", "output_fn", transformed, parents=[Edge(node, "output")], op_type="python",
                         doc="[output_fn] turns the chain's output into the value that is scored").id
    graph.mark_output(node, "output")


def _failed_graph(value: Any, exc: BaseException, what: str) -> Graph:
    graph = Graph(meta={"adapter": "opto_adapters.langchain", "error": f"{type(exc).__name__}: {exc}"})
    node = graph.add("input", "input", value, description="the example")
    graph.add_exception(what, exc, parents=[Edge(node.id, "input")])
    return graph


def optimize_chain(runnable: Any, trainset: Sequence[Any], feedback_fn: Callable[[Any, Any], Any], *,
                   llm: Any = None, optimizer: Any = None, valset: Sequence[Any] | None = None,
                   parameters: Sequence[Parameter] | None = None, include: Sequence[str] | None = None,
                   exclude: Sequence[str] | None = None, input_key: str | None = None,
                   input_keys: Sequence[str] | None = None, prepare: Callable[[Any], Any] | None = None,
                   output_fn: Callable[[Any], Any] | None = None, **settings: Any) -> Any:
    """Optimize a chain in place with OptoPrime: `ChainTarget` + `opto_core.loop.optimize`.

    ``llm`` is the optimizer's `ChatModel` (default: `opto_core.llm.OpenAIChat()` from the
    environment); ``settings`` go to `optimize` (``max_steps``, ``batch_size``, ``run_dir``...).
    Returns the `OptimizationResult`; the chain holds the best values found.
    """
    from opto_core.loop import optimize
    from opto_core.optimizers import OptoPrime

    target = ChainTarget(runnable, parameters, include=include, exclude=exclude, input_key=input_key,
                         input_keys=input_keys, prepare=prepare, output_fn=output_fn)
    if optimizer is None:
        optimizer = OptoPrime(target.parameters(), llm)
    return optimize(target, trainset, feedback_fn, optimizer, valset, **settings)
