"""`OptoCallbackHandler`: one callback that records every top-level run as an OPTO graph.

Pass it like any LangChain callback::

    handler = OptoCallbackHandler()
    chain.invoke(x, config={"callbacks": [handler]})   # also ainvoke, batch, stream, astream
    handler.last_graph                                  # the run as an OPTO graph

It is a `BaseTracer` (LangChain keeps the run tree: parents, children, order) with three
additions: every value is copied the moment a callback sees it (the tracer itself keeps
references, and frameworks mutate them later); when a top-level run ends, its tree is turned
into records, and the records into a graph of real data flow (`dataflow.build_graph`, which knows
the parameters only through a `links.Links`); and runs that LangChain detaches from
their parent (`RunnableWithFallbacks` passes the outer config to its attempts, LangGraph's agent
passes its node's config to the model it calls) are put back under the run that called them.

``run_inline = True`` keeps callbacks in the caller's thread or task under ``ainvoke``, and the
chat-model schema (``original+chat``) keeps messages as messages. The handler never raises into
the user's chain unless ``raise_error=True``: failures are logged and kept in ``handler.errors``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence
from uuid import UUID

from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.context import register_configure_hook
from langchain_core.tracers.schemas import Run

from opto_adapters.langchain import _compat
from opto_adapters.langchain.tracing.builder import Record, build_graph
from opto_adapters.langchain.tracing.links import Links
from opto_adapters.langchain.tracing.snapshots import message_dict, parts_of, snapshot
from opto_core.kernel.graph import META_RUN_ID, Graph
from opto_core.kernel.parameters import Parameter

log = logging.getLogger("opto.langchain")


def _context_parent() -> UUID | None:
    """The run LangChain is executing in this thread or task: the parent its config gives children.

    A run that starts inside run X but names X's own parent as its parent was given the outer config
    explicitly: LangChain's fallbacks do this (langchain-ai/langchain#36072), and so do functions
    that pass on the config they received (LangGraph's ``create_react_agent`` calls its model so).
    """
    return _compat.current_parent_run()


class OptoCallbackHandler(BaseTracer):
    """Records each top-level run (chain, agent, LangGraph graph) as an OPTO `Graph`.

    ``parameters``: the `Parameter`s to link into graphs (from `parameters_of`, and your own with
    ``meta={"used_by": ...}``); by default every object `parameters_of` found that is still alive.
    ``docs``: documentation by run name (a node function's source). ``max_graphs`` bounds ``graphs`` (oldest
    dropped); ``on_graph(graph)`` is called with each finished graph (for streaming consumers).
    """

    name: str = "opto_callback_handler"
    run_inline: bool = True

    def __init__(
        self,
        parameters: Sequence[Parameter] | None = None,
        *,
        max_graphs: int | None = 1000,
        raise_error: bool = False,
        on_graph: Callable[[Graph], None] | None = None,
        docs: dict[str, str] | None = None,
    ) -> None:
        super().__init__(**_compat.CHAT_MESSAGES_SCHEMA)
        self.raise_error = raise_error
        self.graphs: deque[Graph] = deque(maxlen=max_graphs)
        self.errors: list[str] = []
        self.on_graph = on_graph
        self.docs = dict(docs or {})  # run name -> documentation (a function step's source)
        self._records: dict[UUID, Record] = {}
        self._by_root: dict[UUID, Graph] = {}
        self._lock = threading.Lock()
        self.links = Links(parameters)

    # ----- results ---------------------------------------------------------------------------------
    @property
    def last_graph(self) -> Graph | None:
        """The graph of the top-level run that finished last (None before any)."""
        with self._lock:
            return self.graphs[-1] if self.graphs else None

    def graph_for(self, run_id: UUID | str) -> Graph | None:
        """The graph of a top-level run by its id (pass ``config={"run_id": ...}`` to know it)."""
        key = run_id if isinstance(run_id, UUID) else UUID(str(run_id))
        with self._lock:
            return self._by_root.get(key)

    def pop_graphs(self) -> list[Graph]:
        """Take every finished graph (the handler keeps no reference to them afterwards)."""
        with self._lock:
            graphs = list(self.graphs)
            self.graphs.clear()
            self._by_root.clear()
            return graphs

    # ----- recording -------------------------------------------------------------------------------
    def _failed(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        log.warning("OptoCallbackHandler %s", message, exc_info=log.isEnabledFor(logging.DEBUG))
        with self._lock:
            self.errors.append(message)
            del self.errors[:-100]
        if self.raise_error:
            raise exc

    @staticmethod
    def _copy(value: Any) -> Any:
        return snapshot(value)

    def _start_trace(self, run: Run) -> None:  # type: ignore[override]
        try:
            holder_id = _context_parent()
            if holder_id is not None and holder_id != run.parent_run_id and holder_id != run.id:
                holder = self.run_map.get(str(holder_id))
                if (
                    holder is not None
                    and holder.run_type in ("chain", "tool")
                    and holder.parent_run_id == run.parent_run_id
                ):
                    run.parent_run_id = holder_id  # called from inside `holder` with its parent's config
                    self._records.setdefault(run.id, Record(run)).adopted = True
        except Exception as exc:
            self._failed("start", exc)
        super()._start_trace(run)

    def _record(self, run_id: UUID) -> Record | None:
        record = self._records.get(run_id)
        if record is None:
            run = self.run_map.get(str(run_id))
            if run is None:
                return None
            record = self._records.setdefault(run_id, Record(run))
        elif record.run is None:
            run = self.run_map.get(str(run_id))
            record.run = run
        return record

    def _started(self, run: Run, raw: Any, copy: Callable[[Any], Any] = snapshot) -> None:
        """Record a run's input: copied for a top-level run (its input nodes), split into identifiable
        parts where the flow must be matched later; not at all where position tags state the flow."""
        try:
            record = self._records.get(run.id)
            if record is None:
                record = self._records.setdefault(run.id, Record(run))
            record.run = run
            record.raw_in = raw
            if run.parent_run_id is None:
                record.inputs = copy(raw)
                record.started = time.perf_counter()
            elif record.adopted or self._needs_parts(run):  # a re-attached run's tags are its old parent's
                record.parts = parts_of(raw)
        except Exception as exc:
            self._failed("recording a start", exc)

    @staticmethod
    def _needs_parts(run: Run) -> bool:
        """Whether the input must be matched by value later (not when position tags state the flow).

        Position tags come from LangChain's containers; inside a LangGraph node they come from the
        node's own wrapper, which states nothing about the flow, so there values are matched too.
        """
        if run.parent_run_id is None:
            return False  # a root's inputs become input nodes
        for tag in run.tags or ():
            if tag.startswith(("seq:step:", "map:key:", "condition:", "branch:")):
                return "langgraph_step" in ((run.extra or {}).get("metadata") or {})
        return True

    def _ended(
        self, run_id: UUID, raw: Any, value: Any, error: BaseException | None = None, inputs: Any = None
    ) -> None:
        try:
            record = self._record(run_id)
            if record is None:
                return
            record.raw_out = raw
            record.outputs = value
            if error is not None:
                record.error = f"{type(error).__name__}: {error}"
                record.exception = error
            if inputs is not None and record.run is not None:  # streaming steps learn their input at the end
                record.raw_in = inputs
                if record.run.parent_run_id is None:
                    record.inputs = snapshot(inputs)
                elif self._needs_parts(record.run):
                    record.parts = parts_of(inputs)
            if record.started:
                record.ended = time.perf_counter()
        except Exception as exc:
            self._failed("recording an end", exc)

    def on_chain_start(self, serialized: dict[str, Any], inputs: Any, *, run_id: UUID, **kwargs: Any) -> Run:
        run = super().on_chain_start(serialized, inputs, run_id=run_id, **kwargs)
        self._started(run, inputs)
        return run

    def on_chain_end(self, outputs: Any, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> Run:
        self._ended(run_id, outputs, self._copy(outputs), inputs=inputs)
        return super().on_chain_end(outputs, run_id=run_id, inputs=inputs, **kwargs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> Run:
        self._ended(run_id, None, None, error, inputs=inputs)
        return super().on_chain_error(error, run_id=run_id, inputs=inputs, **kwargs)

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID, **kwargs: Any
    ) -> Run:
        run = super().on_chat_model_start(serialized, messages, run_id=run_id, **kwargs)
        batch = messages[0] if len(messages) == 1 else [m for b in messages for m in b]
        self._started(run, batch, lambda msgs: [message_dict(m) for m in msgs])
        return run

    # The two methods below replace BaseTracer's so that runs do not carry LangChain's serialization
    # of every message (`dumpd`) and of every result (`model_dump`): the graph does not use them
    # (the handler keeps its own short copies), and they cost more than everything else it does.
    def _create_chat_model_run(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        run_id: UUID,
        tags: list[str] | None = None,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Run:
        start_time = datetime.now(timezone.utc)
        if metadata:
            kwargs.update({"metadata": metadata})
        return Run(
            id=run_id,
            parent_run_id=parent_run_id,
            serialized=serialized,
            inputs={"messages": "(recorded by OptoCallbackHandler)"},
            **self._get_run_kwargs(parent_run_id, kwargs),
            events=[{"name": "start", "time": start_time}],
            start_time=start_time,
            run_type="chat_model",
            tags=tags,
            name=name,
        )

    def _complete_llm_run(self, response: Any, run_id: UUID) -> Run:
        run = self._get_run(run_id, run_type={"llm", "chat_model"})
        record = self._records.get(run_id)
        run.outputs = {"generations": record.outputs if record is not None else None}
        run.end_time = datetime.now(timezone.utc)
        run.events.append({"name": "end", "time": run.end_time})
        return run

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> Run:
        run = super().on_llm_start(serialized, prompts, run_id=run_id, **kwargs)
        self._started(run, prompts[0] if len(prompts) == 1 else list(prompts))
        return run

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> Run:
        try:
            generations = [g for batch in response.generations for g in batch]
            outputs = []
            for generation in generations:
                message = getattr(generation, "message", None)
                outputs.append(message if message is not None else generation.text)
            raw = outputs[0] if len(outputs) == 1 else outputs
            value = self._copy(raw)
            record = self._record(run_id)
            if record is not None:
                record.usage = _usage(response, outputs)
        except Exception as exc:
            self._failed("reading an LLM result", exc)
            raw, value = None, None
        self._ended(run_id, raw, value)
        return super().on_llm_end(response, run_id=run_id, **kwargs)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Run:
        self._ended(run_id, None, None, error)
        return super().on_llm_error(error, run_id=run_id, **kwargs)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Run:
        run = super().on_tool_start(serialized, input_str, run_id=run_id, inputs=inputs, **kwargs)
        self._started(run, inputs if isinstance(inputs, dict) else input_str)
        return run

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> Run:
        self._ended(run_id, output, self._copy(output))
        return super().on_tool_end(output, run_id=run_id, **kwargs)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Run:
        self._ended(run_id, None, None, error)
        return super().on_tool_error(error, run_id=run_id, **kwargs)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID, **kwargs: Any) -> Run:
        run = super().on_retriever_start(serialized, query, run_id=run_id, **kwargs)
        self._started(run, query)
        return run

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> Run:
        self._ended(run_id, documents, self._copy(list(documents)))
        return super().on_retriever_end(documents, run_id=run_id, **kwargs)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> Run:
        self._ended(run_id, None, None, error)
        return super().on_retriever_error(error, run_id=run_id, **kwargs)

    # ----- a top-level run ended: build its graph ---------------------------------------------------
    def _persist_run(self, run: Run) -> None:
        tree = _tree_ids(run)
        try:
            records = {run_id: self._records[run_id] for run_id in tree if run_id in self._records}
            graph = build_graph(run, records, self.links.refresh(), self.docs)
        except Exception as exc:
            graph = None
            self._failed(f"building the graph of run {run.id}", exc)
        finally:
            for run_id in tree:
                self._records.pop(run_id, None)
                self.order_map.pop(run_id, None)
        if graph is None:
            return
        with self._lock:
            if self.graphs.maxlen is not None and len(self.graphs) == self.graphs.maxlen:
                dropped = self.graphs[0]
                self._by_root.pop(UUID(dropped.meta[META_RUN_ID]), None)
            self.graphs.append(graph)
            self._by_root[run.id] = graph
        if self.on_graph is not None:
            try:
                self.on_graph(graph)
            except Exception as exc:
                self._failed("on_graph", exc)


def _tree_ids(run: Run) -> list[UUID]:
    ids, stack = [], [run]
    while stack:
        current = stack.pop()
        ids.append(current.id)
        stack.extend(current.child_runs)
    return ids


def _usage(response: Any, outputs: list[Any]) -> dict[str, int]:
    """Prompt/completion tokens of one model call, from message usage or the provider's llm_output."""
    prompt = completion = 0
    for output in outputs:
        usage = getattr(output, "usage_metadata", None)
        if usage:
            prompt += int(usage.get("input_tokens", 0) or 0)
            completion += int(usage.get("output_tokens", 0) or 0)
    if not (prompt or completion):
        token_usage = (getattr(response, "llm_output", None) or {}).get("token_usage") or {}
        prompt = int(token_usage.get("prompt_tokens", 0) or 0)
        completion = int(token_usage.get("completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion} if (prompt or completion) else {}


_TRACE_HANDLER: ContextVar[OptoCallbackHandler | None] = ContextVar("opto_langchain_trace", default=None)
register_configure_hook(_TRACE_HANDLER, inheritable=True)


@contextmanager
def opto_trace(parameters: Sequence[Parameter] | None = None, **settings: Any) -> Iterator[OptoCallbackHandler]:
    """Trace every LangChain run inside the block, with no ``config`` at all (like ``collect_runs()``)::

        with opto_trace() as handler:
            chain.invoke(x)
        handler.last_graph

    It uses LangChain's own configure hook, so it covers sync and async code and LangGraph,
    in this thread or task and the ones it starts.
    """
    handler = OptoCallbackHandler(parameters, **settings)
    token = _TRACE_HANDLER.set(handler)
    try:
        yield handler
    finally:
        _TRACE_HANDLER.reset(token)
