"""Tracing plain Python: record a workflow's run as an OPTO graph, with no framework.

Three pieces, in the spirit of micrograd:

- ``@op`` marks a function as one step. Called inside a capture, each call becomes an ``op``
  node whose parents are the traced values it received; outside a capture it is the plain
  function (same result, no cost beyond one context-variable read).
- `Parameter` objects passed to an op become ``parameter`` nodes; ``@op(trainable=True)``
  makes the function's own source a ``code`` parameter that the optimizer may rewrite.
- ``with capture() as run:`` collects one run; ``run.graph`` holds its graph.

How values are followed from op to op: by the core's provenance index
(`opto_core.kernel.provenance.ProvenanceIndex`, identity and tags only: plain Python hands every value
on itself, so equal texts are no evidence here). A result that is a ``str``, ``int`` or ``float``
is returned as a tiny subclass carrying its node id (it compares, hashes and prints exactly like
the plain value); any other object is followed by identity. ``bool`` and ``None`` cannot be
tagged and enter the next op as constants. Arithmetic done *outside* an op is not traced: wrap
it in an op. State lives in a context variable, so runs in different threads or asyncio tasks
never mix.

An ``async def`` under ``@op`` gives an awaitable op: awaiting it records the awaited result
(not a coroutine object), so the edge to the next op is kept. A trainable op's new source is
checked by its code parameter (shape and code policy, `opto_core.kernel.code_policy`) and compiled by
`opto_core.kernel.code.compile_like`; this module never calls ``exec`` or ``compile`` itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import platform
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, overload

from opto_core.kernel.code import SourceUnavailable, compile_like, function_source
from opto_core.kernel.exits import EXITS, exit_as_failure
from opto_core.kernel.graph import META_DURATION, Edge, Graph, run_meta
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import ProvenanceIndex, untag

ADAPTER = "opto_core.trace"
FRAMEWORK = "python"

_CURRENT: ContextVar[Run | None] = ContextVar("opto_trace_run", default=None)


__all__ = ["Run", "TracedOp", "capture", "current_run", "op", "untag"]


@dataclass
class Run:
    """One captured run: its graph, and how to find the node behind a value (its provenance index)."""

    graph: Graph
    output: Any = None
    error: BaseException | None = None
    index: ProvenanceIndex = field(default_factory=lambda: ProvenanceIndex(text=False), repr=False)

    def tag(self, value: Any, node_id: str) -> Any:
        """Return ``value`` carrying its node id, so the next op can find its parent."""
        return self.index.tag(value, node_id, depth=0)

    def node_of(self, value: Any) -> str | None:
        """The id of the node that produced ``value`` in this run, if it is known."""
        return self.index.node_of(value, depth=0)

    def input(self, name: str, value: Any, description: str = "") -> Any:
        """Declare an external value (an example's field); returns it traced."""
        node = self.graph.add("input", name, value, description=description)
        return self.tag(value, node.id)

    def parameter(self, parameter: Parameter) -> Any:
        """Read a parameter's value inside a run, traced (ops also accept `Parameter`s directly)."""
        node = self.graph.add_parameter(parameter)
        return self.tag(parameter.value, node.id)

    def mark_output(self, value: Any, name: str = "output") -> str:
        """Mark a value as an output of the run; returns the output node's id."""
        node_id = self.node_of(value)
        if node_id is None:  # produced outside any op: record it as a constant result
            node_id = self.graph.add(
                "op", name, value, op_type="untraced", description="a value computed outside any traced op"
            ).id
        return self.graph.mark_output(node_id, name).id


def current_run() -> Run | None:
    """The run being captured in this thread or task, if any."""
    return _CURRENT.get()


@contextmanager
def capture(name: str = "run", meta: dict[str, Any] | None = None) -> Iterator[Run]:
    """Collect one run's graph: ``with capture() as run: ...; run.graph``.

    An exception leaving the block is recorded on ``run.error`` (its ``exception`` node is in the
    graph already) and re-raised; the graph stays available on ``run``.
    """
    run = Run(Graph(meta=run_meta(ADAPTER, FRAMEWORK, platform.python_version(), run=name, **(meta or {}))))
    token = _CURRENT.set(run)
    started = time.perf_counter()
    try:
        yield run
    except BaseException as exc:
        run.error = exc
        raise
    finally:
        _CURRENT.reset(token)
        run.graph.meta[META_DURATION] = round(time.perf_counter() - started, 6)


# ----- ops ------------------------------------------------------------------------------------
class TracedOp:
    """A function recorded as an ``op`` node each time it is called inside a capture."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        trainable: bool = False,
        description: str | None = None,
        parameter_name: str | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.description = description if description is not None else (inspect.getdoc(fn) or "")
        try:
            self.source = function_source(fn)
        except (SourceUnavailable, OSError, TypeError):
            self.source = ""
        self.code: Parameter | None = None
        if trainable:
            if not self.source:
                raise ValueError(f"@op(trainable=True) needs the source of {fn.__qualname__}, which is not available")
            self.code = Parameter(
                parameter_name or f"{fn.__qualname__.replace('.<locals>', '')}.code",
                "code",
                self.source,
                description=f"the source of {self.name}",
                origin=fn,
            )
        self._compiled: tuple[str, Callable[..., Any]] | None = None

    @property
    def doc(self) -> str:
        """What the optimizer reads about this op: its docstring, or its source when it has none."""
        if self.code is not None:
            return f"[{self.name}] {self.description}".strip()
        return f"[{self.name}] {self.description}" if self.description else self.source

    def implementation(self) -> Callable[..., Any]:
        """The function to call: for a trainable op, its current source, compiled once per value.

        The value is validated again (shape and code policy) before it is compiled, even if it was
        assigned around `Parameter.validate`: code that did not pass the static checks never runs.
        """
        if self.code is None or self.code.value == self.source:
            return self.fn
        if self._compiled is None or self._compiled[0] != self.code.value:
            source = self.code.validate(self.code.value)
            self._compiled = (self.code.value, compile_like(source, self.fn, label=self.code.name))
        return self._compiled[1]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else functools.partial(self.__call__, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = _CURRENT.get()
        if run is None:
            plain_args = [p.value if isinstance(p, Parameter) else p for p in args]
            plain_kwargs = {k: (v.value if isinstance(v, Parameter) else v) for k, v in kwargs.items()}
            return self.implementation()(*plain_args, **plain_kwargs)
        edges, call_args, call_kwargs = self._inputs(run, args, kwargs)
        if self.is_async:
            return self._awaited(run, edges, call_args, call_kwargs)
        with self._failures_recorded(run, edges):
            result = self.implementation()(*call_args, **call_kwargs)
        return self._record(run, result, edges)

    @contextlib.contextmanager
    def _failures_recorded(self, run: Run, edges: list[Edge]) -> Iterator[None]:
        """An exception of the op's body becomes an exception node (and goes on); an exit raised by a
        trainable op's code fails the op instead of the process (`_exit`)."""
        try:
            yield
        except Exception as exc:
            run.graph.add_exception(self.name, exc, parents=edges, op_type="python", doc=self.doc)
            raise
        except EXITS as exc:
            if self.code is None:  # the user's own code (a plain op), maybe a real Ctrl-C: let it through
                raise
            raise self._exit(run, exc, edges) from exc

    def _exit(self, run: Run, exc: BaseException, edges: list[Edge]) -> Exception:
        """A trainable op's code tried to end the process: the op fails instead, linked to its code parameter."""
        error = exit_as_failure(exc, where=f"the code of {self.name}")
        run.graph.add_exception(self.name, error, parents=edges, op_type="python", doc=self.doc)
        return error

    async def _awaited(self, run: Run, edges: list[Edge], call_args: list[Any], call_kwargs: dict[str, Any]) -> Any:
        """An ``async def`` op: the node holds the awaited result, so the next op finds its parent."""
        with self._failures_recorded(run, edges):
            result = await self.implementation()(*call_args, **call_kwargs)
        return self._record(run, result, edges)

    def _record(self, run: Run, result: Any, edges: list[Edge]) -> Any:
        node = run.graph.add(
            "op", self.name, result, parents=edges, op_type="python", doc=self.doc, description=self.description
        )
        return run.tag(result, node.id)

    def _inputs(
        self, run: Run, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Edge], list[Any], dict[str, Any]]:
        """The edges to the arguments' nodes, and the plain arguments to call the function with."""
        graph = run.graph
        bound = self.signature.bind(*args, **kwargs)
        edges: list[Edge] = []
        call_args: list[Any] = []
        call_kwargs: dict[str, Any] = {}
        for arg_name, value in bound.arguments.items():
            kind = self.signature.parameters[arg_name].kind
            values = (
                value
                if kind == inspect.Parameter.VAR_POSITIONAL
                else list(value.values())
                if kind == inspect.Parameter.VAR_KEYWORD
                else [value]
            )
            names = (
                [f"{arg_name}[{i}]" for i in range(len(values))]
                if kind == inspect.Parameter.VAR_POSITIONAL
                else list(value)
                if kind == inspect.Parameter.VAR_KEYWORD
                else [arg_name]
            )
            plain_values = []
            for label, item in zip(names, values):
                if isinstance(item, Parameter):
                    edges.append(Edge(graph.add_parameter(item).id, label))
                    plain_values.append(item.value)
                    continue
                parent = run.node_of(item)
                if parent is None:
                    parent = graph.add("input", label, item, description=f"a constant passed to {self.name}").id
                edges.append(Edge(parent, label))
                plain_values.append(untag(item))
            if kind == inspect.Parameter.VAR_POSITIONAL:
                call_args.extend(plain_values)
            elif kind == inspect.Parameter.VAR_KEYWORD:
                call_kwargs.update(zip(names, plain_values))
            elif kind == inspect.Parameter.KEYWORD_ONLY:
                call_kwargs[arg_name] = plain_values[0]
            else:
                call_args.append(plain_values[0])
        if self.code is not None:
            edges.append(Edge(graph.add_parameter(self.code).id, "__code"))
        return edges, call_args, call_kwargs


@overload
def op(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
    parameter_name: str | None = None,
) -> TracedOp: ...


@overload
def op(
    fn: None = None,
    *,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
    parameter_name: str | None = None,
) -> Callable[[Callable[..., Any]], TracedOp]: ...


def op(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
    parameter_name: str | None = None,
) -> TracedOp | Callable[[Callable[..., Any]], TracedOp]:
    """Trace a function as one op: ``@op`` or ``@op(trainable=True)`` (its source becomes a parameter)."""

    def wrap(function: Callable[..., Any]) -> TracedOp:
        return TracedOp(
            function, name=name, trainable=trainable, description=description, parameter_name=parameter_name
        )

    return wrap(fn) if fn is not None else wrap


# ----- a target for the optimization loop ----------------------------------------------------------
