"""`ChainTarget`: a LangChain runnable, agent or compiled LangGraph graph as a target of the shared loop.

``optimize(ChainTarget(chain), trainset, feedback_fn, OptoPrime(...))`` runs each example through
the chain with an `OptoCallbackHandler` and hands the loop the output and its graph. Writing
values back, undo, include/exclude and saving values are `opto_core.engine.target.BoundTarget`'s, over
the bindings `parameters_of` found.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Callable, Sequence
from uuid import uuid4

import langchain_core

from opto_adapters.langchain import _compat
from opto_adapters.langchain.parameters import (
    FRAMEWORK,
    ModelChoices,
    NoParametersFound,
    binding_of,
    bound_parameters,
    function_docs,
    group_of_parameter,
)
from opto_adapters.langchain.tracing.builder import failed_graph
from opto_adapters.langchain.tracing.handler import OptoCallbackHandler
from opto_core.engine.background import BackgroundLoop
from opto_core.engine.target import BoundTarget
from opto_core.kernel.graph import Edge, Graph
from opto_core.kernel.parameters import Parameter

log = logging.getLogger("opto")
#: Where `ChainTarget.run` runs a graph LangGraph will only run asynchronously (one loop for every run).
ASYNC_RUNS = BackgroundLoop("opto-langchain-loop", "inside async code use `await target.arun(example)`")


class ChainTarget(BoundTarget):
    """Runs a runnable traced, and reads/writes its parameters (the `opto_core.engine.target.Target` protocol).

    - ``parameters``: `Parameter`s to optimize (default: what `parameters_of(runnable)` finds).
      Your own `Parameter` objects may be mixed in; one with ``meta={"used_by": "node_name"}`` is
      linked to the runs of that name, and to the model calls inside them that received its text
      (e.g. a ``@dynamic_prompt`` middleware that returns ``param.value``: ``used_by="model"``).
    - ``include``/``exclude``: names or globs (`opto_core.kernel.binding.select`); what they leave out is
      frozen and stays visible in the graph; a pattern that matches nothing is an error.
    - What the chain receives from an example: ``prepare(example)`` if given; else
      ``example[input_key]``; else, for a dict example, the keys in ``input_keys`` or, by default,
      the keys the runnable's input schema declares (so labels such as ``"answer"`` never reach the
      chain or the trace). A dict whose keys do not match the chain's inputs is warned about once.
    - ``output_fn(output)`` turns the chain's output into what the feedback function scores
      (e.g. the last message's text of a LangGraph state); it appears in the graph as one more op.
    - ``config``: extra `RunnableConfig` for every run (tags, metadata, ``configurable``...).
    - ``context``: the LangChain 1.x / LangGraph runtime context of an agent or graph built with
      ``context_schema=`` (what ``agent.invoke(x, context=Ctx(...))`` passes; middleware reads it as
      ``request.runtime.context``): one value for every run, or a function of the example for a
      context per example (``context=lambda ex: Ctx(user_name=ex["user"])``).
    - ``model_choices``: the models you would accept; each chat model's name becomes a ``choice``
      parameter that starts at the current model (see `parameters.model_choice_parameters`): a list
      for every model, or ``{"llm": ["gpt-4o-mini", "gpt-4o"]}`` by model.
    """

    framework = FRAMEWORK
    framework_version = langchain_core.__version__

    def __init__(
        self,
        runnable: Any,
        parameters: Sequence[Parameter] | None = None,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        input_key: str | None = None,
        input_keys: Sequence[str] | None = None,
        prepare: Callable[[Any], Any] | None = None,
        output_fn: Callable[[Any], Any] | None = None,
        config: dict[str, Any] | None = None,
        context: Any = None,
        model_choices: ModelChoices | None = None,
    ) -> None:
        if not hasattr(runnable, "invoke"):
            raise TypeError(f"ChainTarget needs a LangChain runnable (with .invoke), got {type(runnable).__name__}")
        self.runnable = runnable
        self.bound = bound_parameters(
            runnable, parameters, include=include, exclude=exclude, model_choices=model_choices
        )
        self.context = context
        if not any(p.trainable for p in self.bound):
            raise NoParametersFound(f"none of the parameters given is trainable: {self.bound.names()}")
        self.input_key = input_key
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.prepare = prepare
        self.output_fn = output_fn
        self.config = dict(config or {})
        self._schema_keys: list[str] | None | bool = False  # False: not computed yet
        self._warned = False
        self._async_only = False  # LangGraph refused invoke (async nodes only): run() goes through arun
        self.docs = function_docs(runnable)

    def run(self, example: Any) -> tuple[Any, Graph]:
        """Run one example; a chain that raises gives ``(exception, graph with its exception node)``."""
        if self._async_only:
            return ASYNC_RUNS.run(self.arun(example))
        started = self._start(example)
        if isinstance(started[0], BaseException):
            return started  # type: ignore[return-value]
        handler, chain_input, config, extra = started
        try:
            output = self.runnable.invoke(chain_input, config, **extra)
        except Exception as exc:
            if _compat.needs_async_api(exc) and threading.current_thread() is not ASYNC_RUNS.thread:
                # a graph of async nodes: LangGraph refuses invoke, so this run and the next go through
                # ainvoke on one background loop (its async clients stay bound to one loop)
                self._async_only = True
                log.info(
                    "%s has async nodes only: running it with ainvoke (executor='asyncio' avoids the extra thread)",
                    type(self.runnable).__name__,
                )
                return ASYNC_RUNS.run(self.arun(example))
            return self._failed(handler, config, chain_input, exc)
        return self._finish(handler, config, output)

    async def arun(self, example: Any) -> tuple[Any, Graph]:
        """`run` on the caller's event loop (``ainvoke``), for ``executor="asyncio"``: no thread per run."""
        started = self._start(example)
        if isinstance(started[0], BaseException):
            return started  # type: ignore[return-value]
        handler, chain_input, config, extra = started
        try:
            output = await self.runnable.ainvoke(chain_input, config, **extra)
        except Exception as exc:
            return self._failed(handler, config, chain_input, exc)
        return self._finish(handler, config, output)

    def _start(self, example: Any) -> tuple[Any, ...]:
        """A fresh handler, the chain's input, the run's config (with the handler added to the callbacks)
        and the keyword arguments of ``invoke`` (the runtime context); or ``(exception, graph)`` when
        the example cannot be turned into the chain's input."""
        handler = self.handler()
        try:
            chain_input = self.input_of(example)
            extra = {} if self.context is None else {"context": self.context_of(example)}
        except Exception as exc:
            return exc, failed_graph(example, exc, "preparing the chain's input")
        callbacks = self.config.get("callbacks")
        if callbacks is None:
            callbacks = [handler]
        elif isinstance(callbacks, (list, tuple)):
            callbacks = [*callbacks, handler]
        else:  # a callback manager
            callbacks = callbacks.copy()
            callbacks.add_handler(handler, inherit=True)
        return handler, chain_input, {**self.config, "callbacks": callbacks, "run_id": uuid4()}, extra

    @staticmethod
    def _failed(
        handler: OptoCallbackHandler, config: dict[str, Any], chain_input: Any, exc: BaseException
    ) -> tuple[Any, Graph]:
        graph = handler.graph_for(config["run_id"])
        return exc, graph if graph is not None else failed_graph(chain_input, exc, "running the chain")

    def _finish(self, handler: OptoCallbackHandler, config: dict[str, Any], output: Any) -> tuple[Any, Graph]:
        """The run's graph, with ``output_fn`` applied as one more op when there is one."""
        graph = handler.graph_for(config["run_id"])
        if graph is None:
            raise RuntimeError(
                f"the run left no graph: {'; '.join(handler.errors) or 'no callback reached the handler'}"
            )
        if self.output_fn is None:
            return output, graph
        marked = graph.outputs[0]
        source = Edge(marked.edges[0].id, "output")
        try:
            transformed: Any = self.output_fn(output)
            node = graph.add(
                "op",
                "output_fn",
                transformed,
                parents=[source],
                op_type="python",
                doc="[output_fn] turns the chain's output into the value that is scored",
            )
        except Exception as exc:
            transformed = exc
            node = graph.add(
                "exception", "output_fn", f"{type(exc).__name__}: {exc}", parents=[source], op_type="python", raw=True
            )
        _move_output(graph, marked, node)
        return transformed, graph

    def coverage_fix(self, parameter: Parameter, cause: str) -> str | None:
        """What to try when feedback does not reach ``parameter``, in LangChain's terms (for `opto_core.coverage`)."""
        group = group_of_parameter(parameter)
        used_by = parameter.meta.get("used_by")
        if group is None and used_by and cause in ("off_path", "unlinked", "never_seen"):
            return (
                f"{parameter.name} is linked to the runs named {used_by!r} (meta used_by), but no model call inside "
                f"them received its text: put its value (or the text you fill it into) in the messages that run "
                f"sends, make it Parameter(..., template=True) if your code fills it in, or name the run that "
                f"sends it in used_by"
            )
        if group is not None and group.kind == "variable" and cause in ("unlinked", "never_seen", "off_path"):
            return (
                f"{parameter.name} is the prompt in {binding_of(parameter).describe()}, but no model request of "
                f"these runs carried its text: the code that sends it did not run for these examples (run one "
                f"that takes that branch), or the text is changed after it is filled in (keep that change in "
                f"the template itself)"
            )
        if group is not None and group.kind == "retriever" and cause == "off_path":
            return (
                f"the retriever's documents do not reach the answer: pass what {parameter.name.rsplit('.', 2)[0]} "
                f"returns into the prompt (e.g. {{'context': retriever | format_docs, ...}})"
            )
        return None

    # ----- helpers --------------------------------------------------------------------------------
    def handler(self) -> OptoCallbackHandler:
        """A fresh handler for one run (runs in several threads never share state)."""
        return OptoCallbackHandler(self.bound.parameters(), max_graphs=1, docs=self.docs)

    def context_of(self, example: Any) -> Any:
        """The runtime context for one example: ``context(example)`` when it is a function, else ``context``."""
        if callable(self.context) and not isinstance(self.context, type):
            return self.context(example)
        return self.context

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
            self._warn_once(
                f"the chain declares no input keys, so each example dict is passed whole, with "
                f"its keys {sorted(map(str, example))}; if one of them is a label, pass "
                f"input_keys=[...] (or input_key=..., or prepare=...) to ChainTarget"
            )
            return dict(example)
        missing = [k for k in keys if k not in example and self.input_keys is not None]
        if missing:
            raise KeyError(f"the example lacks the input field(s) {missing}; it has {sorted(example)}")
        dropped = [str(k) for k in example if k not in keys]
        if self.input_keys is None and (dropped or not any(k in example for k in keys)):
            self._warn_once(
                f"the example's keys {dropped or sorted(map(str, example))} are not inputs of the chain "
                f"(it reads {list(keys)}), so they are left out of every run; if that is not what "
                f"you want, pass input_keys=[...] or prepare=... to ChainTarget"
            )
        return {k: example[k] for k in keys if k in example}

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, UserWarning, stacklevel=3)

    def schema_keys(self) -> list[str] | None:
        """The fields the runnable's input schema declares (None when it declares none)."""
        if self._schema_keys is False:
            try:
                schema = self.runnable.get_input_jsonschema()
                properties = schema.get("properties") if isinstance(schema, dict) else None
                self._schema_keys = list(properties) if properties else None
            except Exception:  # e.g. a typing.TypedDict state on Python < 3.12: pydantic refuses it
                self._schema_keys = None
            if self._schema_keys is None:  # a compiled LangGraph graph: its builder's input schema
                state = getattr(getattr(self.runnable, "builder", None), "input_schema", None)
                keys = list(getattr(state, "__annotations__", None) or [])
                self._schema_keys = keys or None
        return self._schema_keys  # type: ignore[return-value]


def _move_output(graph: Graph, marked: Any, node: Any) -> None:
    """Point the chain's output mark at ``node`` (what ``output_fn`` made of it): one output per run."""
    old = marked.edges[0]
    graph.add_edge(marked.id, Edge(node.id, "value"))
    marked.edges.remove(old)
    marked.value = node.value


def optimize_chain(
    runnable: Any,
    trainset: Sequence[Any],
    feedback_fn: Callable[[Any, Any], Any],
    *,
    llm: Any = None,
    optimizer: Any = None,
    valset: Sequence[Any] | None = None,
    parameters: Sequence[Parameter] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    input_key: str | None = None,
    input_keys: Sequence[str] | None = None,
    prepare: Callable[[Any], Any] | None = None,
    output_fn: Callable[[Any], Any] | None = None,
    context: Any = None,
    model_choices: ModelChoices | None = None,
    **settings: Any,
) -> Any:
    """Optimize a chain in place with OptoPrime: `ChainTarget` + `opto_core.engine.loop.optimize`.

    ``llm`` is the optimizer's `ChatModel` (default: `opto_core.llm.client.OpenAIChat()` from the
    environment); ``settings`` go to `optimize` (``max_steps``, ``batch_size``, ``run_dir``...).
    Returns the `OptimizationResult`; the chain holds the best values found.
    """
    from opto_core.engine.loop import optimize
    from opto_core.optimizers.optoprime import OptoPrime

    target = ChainTarget(
        runnable,
        parameters,
        include=include,
        exclude=exclude,
        input_key=input_key,
        input_keys=input_keys,
        prepare=prepare,
        output_fn=output_fn,
        context=context,
        model_choices=model_choices,
    )
    if optimizer is None:
        if llm is None:  # the documented default: a client configured from the environment
            from opto_core.llm.client import OpenAIChat

            llm = OpenAIChat()
        optimizer = OptoPrime(target.parameters(), llm)
    return optimize(target, trainset, feedback_fn, optimizer, valset, **settings)
